"""A real S3 endpoint for tests: moto's server on 127.0.0.1 (an ephemeral port), buckets, credentials, env.

Nothing is mocked in the code under test: scripts and Streaming talk HTTP to this server exactly as to AWS,
selected by ``S3_ENDPOINT_URL``. The server runs in the pytest process, so tests can also read its backend state
(object timestamps with microseconds, delete markers) to check the order things were written in.
"""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from tests.helpers import PYTHON, REPO, train_env

HOST = "127.0.0.1"
REGION = "us-east-1"
KEY_ID, SECRET = "testing", "testing"


@dataclass
class MotoS3:
    """A started moto server and what tests need from it."""

    server: Any
    port: int
    _iam_key: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self, key_id: str = KEY_ID, secret: str = SECRET, service: str = "s3") -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=key_id,
                            aws_secret_access_key=secret)

    def new_bucket(self, versioned: bool = False, **creds: str) -> str:
        """A fresh bucket per test, so tests never see each other's objects."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        s3 = self.client(**creds)
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def keys(self, bucket: str, prefix: str = "", **creds: str) -> list[str]:
        """Object names under ``prefix/``, relative to it, sorted."""
        base = f"{prefix.strip('/')}/" if prefix else ""
        pages = self.client(**creds).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
        return sorted(o["Key"][len(base):] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def versions(self, bucket: str, key: str) -> list[Any]:
        """The server's own records for ``key`` (objects and delete markers), oldest first."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return list(s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys.getlist(key, []))

    def iam_key(self) -> dict[str, str]:
        """Credentials of an IAM user allowed s3:* (created once; made while the server accepts anything)."""
        if not self._iam_key:
            iam = self.client(service="iam")
            iam.create_user(UserName="trainer")
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            iam.put_user_policy(UserName="trainer", PolicyName="s3", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName="trainer")["AccessKey"]
            self._iam_key.update(key_id=key["AccessKeyId"], secret=key["SecretAccessKey"])
        return dict(self._iam_key)

    @contextlib.contextmanager
    def checking_credentials(self) -> Iterator[dict[str, str]]:
        """Make the server verify signatures against its IAM users (moto's INITIAL_NO_AUTH_ACTION_COUNT, set at
        run time through its /moto-api/reset-auth endpoint); yields valid credentials; back to open after."""
        import requests

        key = self.iam_key()
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        try:
            yield key
        finally:
            requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()

    def env(self, key_id: str = KEY_ID, secret: str = SECRET, endpoint: str | None = None) -> dict[str, str]:
        """``train_env()`` plus what an S3 client reads, pointed at this server only (no profile or config file
        of the machine can leak in)."""
        return {**train_env(), **s3_vars(endpoint or self.endpoint, key_id, secret)}


def s3_vars(endpoint: str, key_id: str = KEY_ID, secret: str = SECRET) -> dict[str, str]:
    return {
        "S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials", "AWS_EC2_METADATA_DISABLED": "true",
    }


def start_moto() -> MotoS3:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request drowns failures

    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    return MotoS3(server, server.get_host_and_port()[1])


def closed_port() -> int:
    """A local port nothing listens on (bound then released): an endpoint that is down."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def run_convert(args: Sequence[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``python convert_to_mds.py ARGS`` as a user runs it."""
    return subprocess.run([PYTHON, "convert_to_mds.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def error_line(stderr: str) -> str:
    """The single ``error: ...`` line a script prints for bad input (and no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]
