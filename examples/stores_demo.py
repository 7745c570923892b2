#!/usr/bin/env python
"""Serve a git repository and an S3 bucket beside the admin-edited settings: ``make run-stores``.

Creates (once) a bare git repository with a few config files and a clone to edit
them in, starts a local S3-compatible server (moto, installed by `make install`)
holding a bucket with two objects, and runs `manage.py serve` with both mounted:
git files as ``repo/<path>``, bucket objects as ``bucket/<key>``.

    python examples/stores_demo.py [--http 127.0.0.1:8000] [--grpc 127.0.0.1:50051] [--s3-port 9000]

Then, in another terminal:

    .venv/bin/python examples/client.py repo/service/limits.json bucket/banner.txt
    git -C var/demo/work commit -am "raise the limit" && git -C var/demo/work push   # after editing a file
    .venv/bin/python examples/stores_demo.py put banner.txt "maintenance tonight"     # change the bucket
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("DATASTREAM_VAR_DIR") or ROOT / "var") / "demo"
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
    """A bare repository seeded with FILES, and a working clone at var/demo/work."""
    remote, work = DEMO / "repo.git", DEMO / "work"
    if remote.exists():
        return remote
    DEMO.mkdir(parents=True, exist_ok=True)
    git("init", "--bare", "--initial-branch=main", str(remote), cwd=DEMO)
    git("clone", str(remote), str(work), cwd=DEMO)
    for path, text in FILES.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    git("add", ".", cwd=work)
    git("-c", "user.name=demo", "-c", "user.email=demo@localhost", "commit", "-m", "demo settings", cwd=work)
    git("push", "origin", "HEAD:main", cwd=work)
    return remote


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
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    client = s3_client(f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket=BUCKET)
    for key, text in OBJECTS.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=text.encode())
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default="127.0.0.1:8000")
    parser.add_argument("--grpc", default="127.0.0.1:50051")
    parser.add_argument("--s3-port", type=int, default=9000)
    parser.add_argument("command", nargs="*", help="'put KEY TEXT' changes an object of the running demo's bucket")
    args = parser.parse_args()
    if args.command:
        if len(args.command) != 3 or args.command[0] != "put":
            parser.error("usage: stores_demo.py put KEY TEXT")
        s3_client(f"http://127.0.0.1:{args.s3_port}").put_object(
            Bucket=BUCKET, Key=args.command[1], Body=args.command[2].encode()
        )
        print(f"put {args.command[1]}; subscribers of bucket/{args.command[1]} see it within the poll interval")
        return 0

    remote = make_repository()
    s3 = start_s3(args.s3_port)
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
        print(f"git repository: {remote} (edit, commit and push in {DEMO / 'work'})")
        print(f"S3 bucket: {BUCKET} at http://127.0.0.1:{args.s3_port}")
        return subprocess.run([*manage, "serve", "--http", args.http, "--grpc", args.grpc], env=env).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        s3.terminate()
        s3.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
