"""A real S3-compatible HTTP server for tests: moto's server mode as a subprocess on a loopback port.

The process plumbing is tests/servers.py's: the port is fixed at construction,
so ``stop()`` then ``start()`` brings the server back where clients expect it
(with an empty state: moto keeps its buckets in memory). ``client()`` is a
boto3 client of that server, playing "another program" that changes the bucket.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import boto3
from botocore.config import Config

from tests.servers import _Server

ACCESS_KEY = "datastream-test"
SECRET_KEY = "datastream-test-secret"
REGION = "us-east-1"


class S3Server(_Server):
    """moto's S3-compatible server on 127.0.0.1:``port``; restartable on the same port."""

    name = "moto"

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port=port)
        self._client: Any = None

    @property
    def endpoint_url(self) -> str:
        """The URL a client's ``endpoint_url`` takes."""
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop the server, delete its directory and close the client."""
        try:
            super().close()
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None

    def client(self) -> Any:
        """A boto3 S3 client of this server, independent of any store's (one per server: building one takes 0.1s)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        ).client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 2, "mode": "standard"},
                request_checksum_calculation="when_required",
                max_pool_connections=16,
            ),
        )

    def options(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """S3Store OPTIONS for ``bucket`` on this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "bucket": bucket,
            **extra,
        }

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return sock.recv(12).startswith(b"HTTP/")
        except OSError:
            return False
