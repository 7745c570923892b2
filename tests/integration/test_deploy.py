"""The production profile's start-up rules, checked in real `manage.py` processes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Only what the test sets: the calling shell (or the production test profile)
    # may export backends, a SECRET_KEY or hosts of its own.
    own = (
        "DATABASE_URL",
        "REDIS_URL",
        "DATASTREAM_",
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "HTTP_HOST",
        "GRPC_HOST",
        "SECURE_",
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


PRODUCTION = {
    # Nothing listens there: these checks need no database.
    "DATABASE_URL": "postgres://datastream:pw@127.0.0.1:9/datastream",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "SECRET_KEY": secrets.token_urlsafe(60),
    "DATASTREAM_ANONYMOUS_LOOPBACK": "0",
    "ALLOWED_HOSTS": "settings.example.com",
}


def test_check_deploy__production_profile__no_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_start__production_with_anonymous_on_beyond_loopback__refused_naming_the_setting():
    result = manage("check", **{**PRODUCTION, "DATASTREAM_ANONYMOUS_LOOPBACK": "1", "GRPC_HOST": "0.0.0.0"})

    assert result.returncode != 0
    assert "DATASTREAM_ANONYMOUS_LOOPBACK is on" in result.stderr


def test_start__production_without_secret_key__refused_naming_it():
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}

    result = manage("check", **env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_start__malformed_variable__refused_naming_it():
    result = manage("check", GRPC_PORT="fifty")

    assert result.returncode != 0
    assert "GRPC_PORT='fifty' is not an integer" in result.stderr


def test_start__in_memory_layer_with_postgres__check_warns_w001():
    env = {k: v for k, v in PRODUCTION.items() if k != "REDIS_URL"}

    result = manage("check", **env)

    assert "datastream.W001" in result.stderr + result.stdout
