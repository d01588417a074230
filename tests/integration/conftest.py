import os
import shutil

import boto3
import pytest

from tests.integration.stack import Stack, free_port, postgres_available

pytestmark = pytest.mark.integration


def _require(ok: bool, what: str) -> None:
    if ok:
        return
    message = f"{what} is not available on this machine"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the integration suite; .ci/run starts it)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = "postflow-it"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    yield endpoint, bucket
    server.stop()


@pytest.fixture(scope="session")
def fake_hive():
    from tests.moderation.fake_hive import FakeHive

    with FakeHive() as hive:
        yield hive


@pytest.fixture(scope="session")
def stack(tmp_path_factory, s3_server, fake_hive):
    _require(postgres_available(), "PostgreSQL on 127.0.0.1:5432")
    _require(shutil.which("redis-server") is not None, "redis-server")
    _require(shutil.which("ffmpeg") is not None, "ffmpeg")
    endpoint, bucket = s3_server
    s = Stack(tmp_path_factory.mktemp("stack"), s3_endpoint=endpoint, bucket=bucket, hive_url=fake_hive.url)
    try:
        s.start()
        s.manage("shell", "-c", "from moderation.platform import get_platform_settings as g; g()")
        yield s
    finally:
        s.stop()


@pytest.fixture
def s3_client(s3_server):
    endpoint, _ = s3_server
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(autouse=True)
def _platform_defaults(request):
    """Each system test starts from the same platform settings and a running worker pool."""
    if "stack" not in request.fixturenames:
        yield
        return
    s = request.getfixturevalue("stack")
    s.set_platform(
        moderation_mode="reactive_only",
        post_processing_enabled=True,
        processor_event_trigger_media_enabled=True,
    )
    if not any(w.alive for w in s.workers):
        s.start_worker()
    yield
