"""Production settings: refuse to start without a SECRET_KEY, and pass Django's deploy checks."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _manage(*args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "DJANGO", "DATABASE_URL", "REDIS_URL"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


def test_refuses_to_start_without_secret_key_when_debug_off(tmp_path):
    result = _manage("check", DEBUG="false", POSTFLOW_VAR_DIR=str(tmp_path))
    assert result.returncode != 0 and "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_deploy_checks_pass_with_production_settings(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="postflow.example",
        POSTFLOW_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stub_ai_provider_refused_in_production(tmp_path):
    result = _manage(
        "check",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(60),
        AI_PROVIDER="stub",
        POSTFLOW_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0 and "stub" in result.stderr


@pytest.mark.django_db
def test_out_of_range_thresholds_refuse_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "AI_REVIEW_THRESHOLD": "30",
            "POSTFLOW_VAR_DIR": str(tmp_path),
            "SECRET_KEY": secrets.token_urlsafe(40),
        },
    )
    assert result.returncode != 0 and "AI thresholds" in result.stderr
