#!/usr/bin/env python
"""Serve a git repository and an S3 bucket beside the admin-edited settings: ``make run-stores``.

Creates (once) a bare git repository with a few config files and a clone to edit
them in, starts a local S3-compatible server (moto, which `make run-stores` installs)
holding a bucket with two objects, and runs `manage.py serve` with both mounted:
git files as ``repo/<path>``, bucket objects as ``bucket/<key>``.

    python examples/stores_demo.py [--http HOST:PORT] [--grpc HOST:PORT] [--s3-port PORT]

HTTP and gRPC listen where `make run` would (HTTP_PORT, GRPC_PORT: 8000 and 50051
when unset); the S3 server on S3_PORT, or a free port when that is unset. The demo
lives in $DATASTREAM_VAR_DIR/demo (var/demo by default). Then, in another terminal
(with the same GRPC_PORT and DATASTREAM_VAR_DIR, if you set them):

    .venv/bin/python examples/client.py repo/service/limits.json bucket/banner.txt
    # edit a file in var/demo/work, then (the clone has a git identity of its own):
    git -C var/demo/work commit -am "raise the limit" && git -C var/demo/work push
    .venv/bin/python examples/stores_demo.py put banner.txt "maintenance tonight"     # change the bucket
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("DATASTREAM_VAR_DIR") or ROOT / "var") / "demo"
# Where the running demo records its S3 port, for `stores_demo.py put`.
S3_PORT_FILE = DEMO / "s3-port"
IDENTITY = {"user.name": "demo", "user.email": "demo@localhost"}
BUCKET = "demo-bucket"
CREDENTIALS = {"access_key": "demo", "secret_key": "demo-secret", "region": "us-east-1"}
FILES = {
    "service/limits.json": '{"max_connections": 100, "timeout_ms": 2500}\n',
    "service/motd.txt": "Welcome to the demo\n",
    "feature_flags.yaml": "new_checkout: true\nbeta_users: [alice, bob]\n",
}
OBJECTS = {"banner.txt": "All systems normal", "rollout.json": '{"percent": 10}'}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def make_repository() -> Path:
    """A bare repository seeded with FILES, and a working clone at var/demo/work with a git identity of its own."""
    remote, work = DEMO / "repo.git", DEMO / "work"
    if not remote.exists():
        DEMO.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "--initial-branch=main", str(remote), cwd=DEMO)
        git("clone", str(remote), str(work), cwd=DEMO)
        for path, text in FILES.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        git("add", ".", cwd=work)
    if work.exists():
        # `git commit` in the clone must work on a machine without a global git identity.
        for name, value in IDENTITY.items():
            git("config", name, value, cwd=work)
        if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=work, capture_output=True).returncode:
            git("commit", "-m", "demo settings", cwd=work)
            git("push", "origin", "HEAD:main", cwd=work)
    return remote


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["access_key"],
        aws_secret_access_key=CREDENTIALS["secret_key"],
        region_name=CREDENTIALS["region"],
    )


def start_s3(port: int) -> subprocess.Popen[bytes]:
    """moto's S3 server on loopback, with the demo bucket and objects."""
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the S3 server (moto) exited at start: is port {port} taken? (S3_PORT / --s3-port)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"the S3 server (moto) did not listen on 127.0.0.1:{port} in 20s") from None
            time.sleep(0.1)
    client = s3_client(f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket=BUCKET)
    for key, text in OBJECTS.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=text.encode())
    return server


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default=None, help="HTTP host:port (default: HTTP_HOST:HTTP_PORT, as make run)")
    parser.add_argument("--grpc", default=None, help="gRPC host:port (default: GRPC_HOST:GRPC_PORT, as make run)")
    s3_default = os.environ.get("S3_PORT", "").strip()
    parser.add_argument(
        "--s3-port",
        type=int,
        default=int(s3_default) if s3_default else None,
        help="port of the local S3 server (default: S3_PORT, else a free port; `put` uses the running demo's)",
    )
    parser.add_argument("command", nargs="*", help="'put KEY TEXT' changes an object of the running demo's bucket")
    args = parser.parse_args()
    if args.command:
        if len(args.command) != 3 or args.command[0] != "put":
            parser.error("usage: stores_demo.py put KEY TEXT")
        port = args.s3_port
        if port is None:
            if not S3_PORT_FILE.exists():
                parser.error(f"no running demo recorded in {S3_PORT_FILE}: start `make run-stores` first")
            port = int(S3_PORT_FILE.read_text())
        s3_client(f"http://127.0.0.1:{port}").put_object(
            Bucket=BUCKET, Key=args.command[1], Body=args.command[2].encode()
        )
        print(f"put {args.command[1]}; subscribers of bucket/{args.command[1]} see it within the poll interval")
        return 0

    # SIGTERM ends the demo like Ctrl-C: the S3 server and `serve` stop with it.
    signal.signal(signal.SIGTERM, _interrupt)
    remote = make_repository()
    args.s3_port = args.s3_port or free_port()
    s3 = start_s3(args.s3_port)
    S3_PORT_FILE.write_text(f"{args.s3_port}\n")
    stores = {
        "repo": {
            "BACKEND": "datastream_app.stores.git.GitStore",
            "PREFIX": "repo/",
            "OPTIONS": {"remote": str(remote), "branch": "main", "poll_interval": 2},
        },
        "bucket": {
            "BACKEND": "datastream_app.stores.s3.S3Store",
            "PREFIX": "bucket/",
            "OPTIONS": {
                "endpoint_url": f"http://127.0.0.1:{args.s3_port}",
                "bucket": BUCKET,
                "poll_interval": 2,
                **CREDENTIALS,
            },
        },
    }
    env = {**os.environ, "DATASTREAM_STORES": json.dumps(stores)}
    manage = [sys.executable, str(ROOT / "manage.py")]
    try:
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True)
        subprocess.run([*manage, "bootstrap"], env=env, check=True)
        print(f"git repository: {remote} (edit, commit and push in {DEMO / 'work'})", flush=True)
        print(f"S3 bucket: {BUCKET} at http://127.0.0.1:{args.s3_port}", flush=True)
        addresses = [*(["--http", args.http] if args.http else []), *(["--grpc", args.grpc] if args.grpc else [])]
        serve = subprocess.Popen([*manage, "serve", *addresses], env=env)
        try:
            return serve.wait()
        except KeyboardInterrupt:
            serve.send_signal(signal.SIGTERM)  # its streams end cleanly, as with Ctrl-C
            serve.wait(timeout=30)
            return 0
    except KeyboardInterrupt:
        return 0
    finally:
        S3_PORT_FILE.unlink(missing_ok=True)
        s3.terminate()
        s3.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
