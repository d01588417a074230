"""Fixtures shared by the media tests: moto's S3 server and a default storage on a fresh bucket."""

from __future__ import annotations

import time

import boto3
import pytest

from media import storage


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    from tests.integration.stack import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(settings, moto_endpoint):
    """The default storage on a fresh bucket of moto's S3 server."""
    bucket = f"pf-{time.monotonic_ns()}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": moto_endpoint,
                "region_name": "us-east-1",
                "access_key": "testing",
                "secret_key": "testing",
                "default_acl": "private",
                "querystring_auth": True,
                "file_overwrite": True,
                "addressing_style": "path",
                "signature_version": "s3v4",
            },
        },
    }
    assert storage.issues_bearer_urls()
    client.bucket = bucket
    return client
