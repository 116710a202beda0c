"""An SQS-speaking server for the tests: ``moto_server`` on a free loopback port.

``sqs_server`` starts one per test session and stops it at the end;
``sqs_url`` gives each test a gatorapp URL with a queue-name prefix of its
own, and dummy AWS credentials in the environment for that test only (so no
real account is ever reached, and subprocess workers inherit them).
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import conftest  # partly initialised while it imports this module: use at call time only
import pytest
from service_process import ServerProcess

REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoServer(ServerProcess):
    name = "moto_server"
    start_timeout = 30.0

    def __init__(self, log_path: Path) -> None:
        super().__init__()
        self.binary = conftest.require_binary("moto_server", "pip install 'moto[server]'")
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        return [self.binary, "-H", "127.0.0.1", "-p", str(self.port)]

    def answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url, timeout=1).close()
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is serving
        except OSError:
            return False
        return True

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="session")
def sqs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto_server running for the whole session."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log")
    try:
        yield server.start().url
    finally:
        server.close()


@pytest.fixture
def sqs_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials, set for this test only."""
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return dict(DUMMY_ENV)


@pytest.fixture
def sqs_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def sqs_url(sqs_server: str, sqs_env: dict[str, str], sqs_prefix: str) -> str:
    """A gatorapp URL on the test server; queues of this test only (own prefix).

    ``scan_wait=0``: moto answers short polls from all of a queue, so a scan
    needs no closing long poll (AWS does; docs/sqs.md).
    """
    return f"sqs://{REGION}/?endpoint_url={sqs_server}&prefix={sqs_prefix}&scan_wait=0"
