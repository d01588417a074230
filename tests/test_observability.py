import json
import logging

import pytest

from config.observability import JsonFormatter
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
