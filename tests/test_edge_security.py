"""The edge of the web app under a hostile client and a bad day (issue 9 rows 3, 4, 7, 11; issue 10's
house-keeping): client address and throttles, the failed-login lockout, deeply nested JSON, health
details, gunicorn's own error pages, Redis down, `make prod-up`'s database, var/ on a fresh clone and
JSON for every API answer."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from config import dbcreate
from config.gunicorn_conf import write_json_error
from content.models import Post, PostType
from tests.conftest import client_for
from tests.factories import PollFactory, PostFactory, UserFactory

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory
AUTH_RATE = 30  # THROTTLE_AUTH default, 30/min


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxies(settings):
    """Set the trusted-proxy count as TRUSTED_PROXY_COUNT does (it feeds DRF's NUM_PROXIES)."""

    def _set(count: int) -> None:
        settings.TRUSTED_PROXY_COUNT = count
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}

    return _set


# --- row 3: the client address comes from the trusted-proxy count -------------------------------------


def _token_attempt(client, i: int, xff: str, **extra):
    return client.post(
        "/api/v1/auth/token",
        {"username": f"nobody{i}", "password": "wrong"},
        format="json",
        HTTP_X_FORWARDED_FOR=xff,
        **extra,
    )


def _register(client, i: int, xff: str, **extra):
    return client.post(
        "/api/v1/auth/register",
        {"username": f"newcomer{i}-{uuid.uuid4().hex[:6]}", "password": "A-long-pass-phrase-42"},
        format="json",
        HTTP_X_FORWARDED_FOR=xff,
        **extra,
    )


@pytest.mark.parametrize("send", [_token_attempt, _register], ids=["auth-token", "auth-register"])
def test_without_trusted_proxies_a_new_x_forwarded_for_does_not_escape_the_throttle(settings, proxies, send):
    settings.AXES_ENABLED = False  # the throttle alone (the lockout is tested below)
    proxies(0)
    c = client_for()
    statuses = [send(c, i, f"198.51.100.{i}").status_code for i in range(AUTH_RATE + 5)]
    assert 429 not in statuses[:AUTH_RATE]
    assert statuses[AUTH_RATE:] == [429] * 5
    r = send(c, 999, "203.0.113.99")
    assert (r.status_code, r.json()["code"]) == (429, "throttled") and int(r["Retry-After"]) > 0


@pytest.mark.parametrize("send", [_token_attempt, _register], ids=["auth-token", "auth-register"])
def test_with_one_trusted_proxy_the_address_it_appended_is_the_client(settings, proxies, send):
    settings.AXES_ENABLED = False
    proxies(1)
    c = client_for()
    # One client behind the proxy, lying in the part of the header it controls: still one client.
    same = [send(c, i, f"10.9.{i}.1, 203.0.113.7").status_code for i in range(AUTH_RATE + 1)]
    assert 429 not in same[:AUTH_RATE] and same[AUTH_RATE] == 429
    # Other clients behind the same proxy (same REMOTE_ADDR) have their own allowance.
    others = [send(c, i, f"203.0.113.7, 198.51.100.{i}").status_code for i in range(AUTH_RATE + 1)]
    assert 429 not in others, others


def test_the_lockout_and_the_request_log_use_the_same_address_rule(proxies, caplog):
    """A third user of the client address: the admin login's per-address lockout."""
    proxies(0)
    c = Client()
    for i in range(10):
        c.post(
            "/admin/login/", {"username": f"ghost{i}", "password": "x"}, HTTP_X_FORWARDED_FOR=f"10.0.0.{i}"
        )
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
    user = UserFactory(is_staff=True)
    r = c.post(
        "/admin/login/", {"username": user.username, "password": PASSWORD}, HTTP_X_FORWARDED_FOR="1.2.3.4"
    )
    assert r.status_code == 429 and "_auth_user_id" not in c.session

    proxies(1)
    AccessAttempt.objects.all().delete()
    with caplog.at_level(logging.INFO, logger="postflow.request"):
        c.post(
            "/admin/login/",
            {"username": "ghost", "password": "x"},
            HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.44",
        )
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["192.0.2.44"]
    assert [r.client_ip for r in caplog.records if getattr(r, "event", "") == "request"] == ["192.0.2.44"]


# --- row 4: failed-login lockout per account and per address, admin and API ----------------------------


def _fail(c, username: str, n: int, path: str = "/admin/login/", **extra) -> list[int]:
    out = []
    for _ in range(n):
        if path.startswith("/api/"):
            r = c.post(path, {"username": username, "password": "wrong"}, format="json", **extra)
        else:
            r = c.post(path, {"username": username, "password": "wrong"}, **extra)
        out.append(r.status_code)
    return out


def test_admin_login_is_locked_after_the_limit_even_with_the_right_password(settings):
    moderator = UserFactory(is_staff=True)
    c = Client()
    statuses = _fail(c, moderator.username, settings.LOGIN_FAILURE_LIMIT - 1)
    assert statuses == [200] * (settings.LOGIN_FAILURE_LIMIT - 1)  # the form again, with its error
    assert _fail(c, moderator.username, 1) == [429]
    r = c.post("/admin/login/", {"username": moderator.username, "password": PASSWORD})
    assert r.status_code == 429
    assert "_auth_user_id" not in c.session
    page = r.content.decode()
    assert "Too many failed logins" in page and "ask an operator" in page
    assert 0 < int(r["Retry-After"]) <= settings.LOGIN_LOCKOUT_MINUTES * 60
    # The account is locked, whichever address tries it.
    r = Client(REMOTE_ADDR="192.0.2.10").post(
        "/admin/login/", {"username": moderator.username, "password": PASSWORD}
    )
    assert r.status_code == 429


def test_api_token_is_locked_after_the_limit_with_a_json_code_and_retry_after(settings):
    user = UserFactory()
    c = client_for()
    statuses = _fail(c, user.username, settings.LOGIN_FAILURE_LIMIT, "/api/v1/auth/token")
    assert statuses[:-1] == [400] * (settings.LOGIN_FAILURE_LIMIT - 1) and statuses[-1] == 429
    r = c.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}, format="json")
    assert r.status_code == 429 and "token" not in r.json()
    body = r.json()
    assert body["code"] == "login_locked" and "operator" in body["detail"]
    assert body["retry_after"] == int(r["Retry-After"])
    cool_off = settings.LOGIN_LOCKOUT_MINUTES * 60
    assert cool_off - 5 <= body["retry_after"] <= cool_off


def test_one_address_is_locked_across_usernames_but_other_addresses_are_not(settings):
    victim = UserFactory()
    attacker = client_for()
    for i in range(settings.LOGIN_FAILURE_LIMIT):
        _fail(attacker, f"guess{i}", 1, "/api/v1/auth/token")
    r = attacker.post(
        "/api/v1/auth/token", {"username": victim.username, "password": PASSWORD}, format="json"
    )
    assert (r.status_code, r.json()["code"]) == (429, "login_locked")
    elsewhere = client_for()
    r = elsewhere.post(
        "/api/v1/auth/token",
        {"username": victim.username, "password": PASSWORD},
        format="json",
        REMOTE_ADDR="192.0.2.50",
    )
    assert r.status_code == 200 and r.json()["token"] == victim.auth_token.key


def test_operator_commands_unlock_an_account_and_an_address(settings):
    user = UserFactory(is_staff=True)
    c = Client()
    _fail(c, user.username, settings.LOGIN_FAILURE_LIMIT)
    assert c.post("/admin/login/", {"username": user.username, "password": PASSWORD}).status_code == 429
    call_command("axes_reset_username", user.username)
    r = c.post("/admin/login/", {"username": user.username, "password": PASSWORD})
    assert r.status_code == 302 and c.session["_auth_user_id"] == str(user.pk)

    api = client_for()
    for i in range(settings.LOGIN_FAILURE_LIMIT):
        _fail(api, f"guess{i}", 1, "/api/v1/auth/token")
    assert (
        api.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}).status_code == 429
    )
    call_command("axes_reset_ip", "127.0.0.1")
    assert (
        api.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}).status_code == 200
    )


def test_a_lockout_ends_after_the_cool_off(settings):
    user = UserFactory()
    c = client_for()
    _fail(c, user.username, settings.LOGIN_FAILURE_LIMIT, "/api/v1/auth/token")
    assert c.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}).status_code == 429
    last = AccessAttempt.objects.get().attempt_time
    AccessAttempt.objects.update(attempt_time=last - settings.AXES_COOLOFF_TIME)
    assert c.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}).status_code == 200


# --- row 7: deeply nested JSON is a 400 with a code, everywhere ------------------------------------------


def _nested_arrays(n: int) -> str:
    return "[" * n + "]" * n


def _nested_objects(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n


def _deep_bodies(post: Post, poll: Post) -> list[tuple[str, str]]:
    return [
        ("/api/v1/content/posts", '{"type": "text", "body": ' + _nested_arrays(50_000) + "}"),
        (
            "/api/v1/content/posts",
            '{"type": "poll", "poll": {"question": "Q", "options": ["a", "b"], "x": '
            + _nested_objects(5_000)
            + "}}",
        ),
        ("/api/v1/content/posts", '{"type": "text", "body": "x", "title": ' + _nested_arrays(40) + "}"),
        (f"/api/v1/content/posts/{poll.pk}/poll/vote", '{"option_ids": ' + _nested_arrays(50_000) + "}"),
        ("/api/v1/content/uploads", '{"filename": ' + _nested_objects(5_000) + "}"),
        (f"/api/v1/content/posts/{post.pk}/media", '{"upload_id": ' + _nested_arrays(3_000) + "}"),
        (f"/api/v1/content/posts/{post.pk}/report", '{"reason": ' + _nested_arrays(50_000) + "}"),
        ("/api/v1/auth/token", '{"username": ' + _nested_arrays(50_000) + ', "password": "x"}'),
        ("/api/v1/auth/register", _nested_objects(5_000)),
    ]


def test_deeply_nested_json_is_400_json_too_deep_on_every_json_endpoint(user):
    post = PostFactory(author=user, type=PostType.IMAGE, body="")
    poll = PollFactory(post__published=True)
    c = client_for(user)
    for path, body in _deep_bodies(post, poll.post):
        r = c.post(path, body, content_type="application/json")
        assert r.status_code == 400, (path, r.status_code, r.content[:200])
        assert r.json()["code"] == "json_too_deep", (path, r.json())
    r = c.patch(
        f"/api/v1/content/posts/{post.pk}",
        '{"title": ' + _nested_arrays(50_000) + "}",
        content_type="application/json",
    )
    assert (r.status_code, r.json()["code"]) == (400, "json_too_deep")


def test_ordinary_nesting_still_parses(user):
    r = client_for(user).post(
        "/api/v1/content/posts",
        {"type": "poll", "poll": {"question": "Which?", "options": ["This", "That"]}},
        format="json",
    )
    assert r.status_code == 201 and [o["text"] for o in r.json()["poll"]["options"]] == ["This", "That"]


# --- row 11: /healthz, gunicorn's own errors, Redis down, prod-up's database ---------------------------


def test_healthz_names_the_failed_dependency_but_not_its_error(monkeypatch, caplog):
    from config import health

    def broken():
        raise RuntimeError("connect to s3://internal-bucket at 10.1.2.3 failed: secret detail")

    monkeypatch.setattr(health, "_check_storage", broken)
    with caplog.at_level(logging.WARNING, logger="postflow.health"):
        r = Client().get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["checks"]["storage"] == {"ok": False}
    assert body["checks"]["database"]["ok"] is True
    assert "secret" not in r.content.decode() and "10.1.2.3" not in r.content.decode()
    assert any(rec.exc_info and "secret detail" in str(rec.exc_info[1]) for rec in caplog.records)


def test_gunicorn_error_writer_answers_json():
    a, b = socket.socketpair()
    with a, b:
        write_json_error(a, 414, "URI Too Long", "line of 9000 bytes: /<script>")
        raw = b.recv(65536).decode()
    head, body = raw.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 414 URI Too Long") and "Content-Type: application/json" in head
    assert json.loads(body)["code"] == "uri_too_long" and "<script>" not in body


@pytest.mark.integration
def test_gunicorn_with_our_config_answers_a_long_request_line_with_json(tmp_path):
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "DJANGO", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(POSTFLOW_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "config/gunicorn_conf.py",
            "config.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/livez", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/content/posts?q=" + "a" * 9000, timeout=5)
        assert r.status_code == 414 and r.headers["Content-Type"] == "application/json"
        assert r.json()["code"] == "uri_too_long"
        # gunicorn's default (4094) would have refused this one; our limit lets Django answer it.
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/content/nothing?q=" + "a" * 6000, timeout=5)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)


def _cache_errors() -> float:
    return sum(
        REGISTRY.get_sample_value("postflow_cache_errors_total", {"operation": op}) or 0.0
        for op in ("get", "get_many", "set", "add", "delete", "incr", "touch", "has_key", "set_many")
    )


def test_throttles_fail_open_with_redis_down_loudly_and_counted(settings, caplog):
    from config import cache as resilient

    resilient.cache_errors()  # the counter exists from first use
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.ResilientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{_free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    settings.AXES_ENABLED = False
    resilient._last_warning[0] = 0.0
    before = _cache_errors()
    c = client_for()
    with caplog.at_level(logging.WARNING, logger="postflow.cache"):
        statuses = [_token_attempt(c, i, "x").status_code for i in range(AUTH_RATE + 3)]
    assert statuses == [400] * (AUTH_RATE + 3), "throttles fail open while Redis is down (a decision)"
    assert _cache_errors() - before >= AUTH_RATE + 3
    warnings = [r for r in caplog.records if r.name == "postflow.cache"]
    assert len(warnings) == 1 and "throttles are NOT enforced" in warnings[0].getMessage()
    metrics = Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode()
    assert 'postflow_cache_errors_total{operation="get"}' in metrics


@pytest.mark.parametrize(
    "url, name",
    [
        ("postgres://postgres@127.0.0.1:5432/postflow", "postflow"),
        ("postgresql://u:p@db.internal:6543/pf_prod?sslmode=require", "pf_prod"),
        ("postgres://postgres@127.0.0.1/odd%20name", "odd name"),
    ],
)
def test_prod_up_database_name_comes_from_database_url(url, name):
    assert dbcreate.database_name(url) == name


@pytest.mark.parametrize("url", ["sqlite:///var/db.sqlite3", "postgres://postgres@127.0.0.1:5432/"])
def test_prod_up_refuses_a_url_without_a_postgres_database(url):
    with pytest.raises(ValueError):
        dbcreate.database_name(url)


def test_prod_up_creates_the_database_database_url_names():
    name = f"pf_edge_dbcreate_{uuid.uuid4().hex[:8]}"
    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(admin, connect_timeout=2).close()
    except psycopg.OperationalError:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "config.dbcreate"],
            cwd=ROOT,
            env={**env, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and f"database {name}: created" in result.stdout, result.stderr
        assert dbcreate.ensure_database(url) is False  # the second run finds it
        with psycopg.connect(admin, autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'postflow_'").fetchone()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


# --- issue 10: a fresh clone's var/, and JSON for every API answer even with DEBUG -----------------------


def test_migrate_with_a_secret_key_on_a_fresh_clone_creates_var(tmp_path):
    var = tmp_path / "fresh" / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "DJANGO", "DATABASE_URL", "REDIS_URL", "S3_"))
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env={**env, "SECRET_KEY": "x", "POSTFLOW_VAR_DIR": str(var)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (var / "db.sqlite3").stat().st_size > 0
    assert not (var / "secret_key").exists(), "the given SECRET_KEY is used, no key file is made"


@override_settings(DEBUG=True)
def test_unknown_api_paths_and_wrong_methods_are_json_with_debug_on(user):
    c = client_for(user)
    for path in ("/api/v1/nothing-here", "/api/v1/content/posts/not-a-uuid/x", "/m/"):
        r = c.get(path)
        assert r.status_code == 404 and r["Content-Type"] == "application/json", (path, r.content[:100])
        assert r.json()["code"] == "not_found"
    r = c.get("/api/v1/auth/token")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    r = c.put("/healthz")  # outside the API: Django's own pages stay as they are
    assert r.status_code in (200, 405)
    r = Client().get("/not-api/")
    assert r.status_code == 404 and "application/json" not in r["Content-Type"]
