import json
import logging
import subprocess
import sys

import pytest

from config.logs import JsonFormatter
from tests.conftest import client_for


def test_json_formatter_one_line_with_extras():
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "INFO",
            "msg": "hi %s",
            "args": ("there",),
            "event": "request",
            "status": 200,
        }
    )
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert (
        "\n" not in line
        and data["msg"] == "hi there"
        and data["event"] == "request"
        and data["status"] == 200
    )


@pytest.mark.django_db
def test_request_id_and_metrics():
    c = client_for()
    r = c.get("/healthz", HTTP_X_REQUEST_ID="abc123")
    assert r["X-Request-ID"] == "abc123"
    metrics = c.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert metrics.status_code == 200
    assert b'postflow_http_requests_total{method="GET",route="healthz",status="200"}' in metrics.content
    assert c.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404


@pytest.mark.django_db
def test_metrics_token(settings):
    settings.METRICS_TOKEN = "s3cret"
    c = client_for()
    assert c.get("/metrics").status_code == 404
    assert c.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_django_setup_does_not_import_the_prometheus_client():
    """Dramatiq's Prometheus middleware must import prometheus_client itself, after pointing it at
    its multiprocess directory; if Django's start-up (logging config, URL checks) imported it first,
    the workers' /metrics on port 9191 stayed empty."""

    code = "import django, sys; django.setup(); import config.urls; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "config.settings", "LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]),
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.django_db
def test_metrics_refuse_relayed_requests_without_token():
    r = client_for().get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert r.status_code == 404


@pytest.mark.django_db
def test_healthz_checks_dependencies_and_livez_only_liveness():
    assert set(client_for().get("/healthz").json()["checks"]) == {"database", "broker", "storage"}
    assert client_for().get("/livez").json() == {"status": "ok"}
