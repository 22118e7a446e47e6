"""Fixtures shared by the test tiers."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this S3 through s3fs."""
        return {
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API: moto's server on 127.0.0.1 at a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """A fresh bucket, and this process's env pointed at the S3 server."""
    import fsspec

    store = S3(moto_endpoint, f"lightjob-{uuid.uuid4().hex[:12]}")
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    # fsspec reads FSSPEC_S3_* from the env once, at import; this process needs its config.
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": moto_endpoint})
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(store.bucket)
    fsspec.filesystem("s3").invalidate_cache()
    yield store
    fsspec.filesystem("s3").invalidate_cache()


@pytest.fixture
def clean_launch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MASTER_ADDR",
        "MASTER_PORT",
        "NODE_RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "RANK",
        "LIGHTJOB_CHECKPOINT_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    assert "LIGHTJOB_CHECKPOINT_URI" not in os.environ
