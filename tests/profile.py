"""Run pytest under a deployment profile: ``python -m tests.profile {embedded|production} [pytest args...]``.

embedded: SQLite and the in-memory channel layer (what plain ``pytest`` does).
production: a throwaway PostgreSQL and Redis, passed to pytest as DATABASE_URL and REDIS_URL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import FrameType

from tests.servers import BinaryNotFound, PostgresServer, RedisServer, ServerError, find_binary, in_ci

PROFILES = ("embedded", "production")
# Variables that pick the backends; a profile sets them itself.
BACKEND_VARIABLES = ("DATABASE_URL", "REDIS_URL")
# Tells tests which profile runs them, for the few that differ by backend.
PROFILE_VARIABLE = "DATASTREAM_TEST_PROFILE"


def _pytest(args: list[str], env: dict[str, str]) -> int:
    """Run pytest in a child process and return its exit code."""
    process = subprocess.Popen([sys.executable, "-m", "pytest", *args], env=env)
    try:
        return process.wait()
    except BaseException as exc:
        # A terminal's Ctrl-C reached pytest too; a SIGTERM only us: pass it on
        # as an interrupt so pytest still tears down before the servers go away.
        if not isinstance(exc, KeyboardInterrupt):
            process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        if process.poll() is None:
            process.kill()
            process.wait()
        raise


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM (a CI timeout, a kill) into SystemExit so the servers are stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_embedded(args: list[str]) -> int:
    """Pytest with SQLite and the in-memory layer, whatever the calling shell exported."""
    env = {k: v for k, v in os.environ.items() if k not in BACKEND_VARIABLES}
    env[PROFILE_VARIABLE] = "embedded"
    return _pytest(args, env)


def run_production(args: list[str]) -> int:
    """Pytest against a real PostgreSQL and Redis started for this run and always stopped."""
    missing = []
    for name in ("postgres", "initdb", "redis-server"):
        try:
            find_binary(name)
        except BinaryNotFound as exc:
            missing.append(str(exc))
    if missing:
        if in_ci():
            print("production profile: FAILED, servers missing in CI:", *missing, sep="\n  ", file=sys.stderr)
            return 2
        print("production profile: SKIPPED, servers missing:", *missing, sep="\n  ", file=sys.stderr)
        return 0
    with _terminate_as_exit(), PostgresServer() as postgres, RedisServer() as redis:
        print(f"production profile: PostgreSQL {postgres.url}, Redis {redis.url}", file=sys.stderr, flush=True)
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            # Off by default with PostgreSQL; the suite's loopback clients test the
            # anonymous mode on both profiles (tests of the default unset it).
            "DATASTREAM_ANONYMOUS_LOOPBACK": os.environ.get("DATASTREAM_ANONYMOUS_LOOPBACK", "1"),
            PROFILE_VARIABLE: "production",
        }
        return _pytest(args, env)


def main(argv: list[str]) -> int:
    """Dispatch to the profile named by the first argument; the rest goes to pytest."""
    if not argv or argv[0] not in PROFILES:
        print(f"usage: python -m tests.profile {{{'|'.join(PROFILES)}}} [pytest args...]", file=sys.stderr)
        return 2
    profile, args = argv[0], argv[1:]
    try:
        return run_embedded(args) if profile == "embedded" else run_production(args)
    except ServerError as exc:
        print(f"{profile} profile: FAILED, {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
