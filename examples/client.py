#!/usr/bin/env python
"""List capabilities, sync, then subscribe and print every update; reconnects with backoff.

python examples/client.py [--address HOST:PORT] [--once] [keys ...]

The address defaults to DATASTREAM_ADDRESS, else 127.0.0.1:$GRPC_PORT (the port
`make run` serves gRPC on; 50051 when unset). It is printed, with every retry.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import UNREACHABLE_HINT, add_connection_arguments, auth_metadata, open_channel

from protos import datastream_pb2, datastream_pb2_grpc

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def show(data: datastream_pb2.Data) -> str:
    """One line per value: key = value (type) @ revision."""
    value = data.value.decode("utf-8", errors="replace") if data.value_type != "bytes" else f"<{len(data.value)} bytes>"
    return f"{data.key} = {value} ({data.value_type}) rev {data.revision} at {data.updated_at.ToJsonString()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_arguments(parser)
    parser.add_argument("--once", action="store_true", help="print the first message of Subscribe and exit")
    parser.add_argument("--max-backoff", type=float, default=10.0)
    parser.add_argument("keys", nargs="*", help="keys to watch (default: all)")
    args = parser.parse_args()

    try:
        return watch(args)
    except KeyboardInterrupt:  # Ctrl-C, also while waiting to reconnect
        return 0


def watch(args: argparse.Namespace) -> int:
    """Connect, list, sync, subscribe; reconnect with jittered backoff on retryable errors."""
    backoff = 0.2
    latest: dict[str, datastream_pb2.Data] = {}
    hinted = False
    print(f"connecting to {args.address}", file=sys.stderr, flush=True)
    while True:
        try:
            with open_channel(args.address, args.ca) as channel:
                stub = datastream_pb2_grpc.DataServiceStub(channel)
                meta = auth_metadata(args.token)
                capabilities = stub.ListCapabilities(
                    datastream_pb2.ListCapabilitiesRequest(), timeout=10, metadata=meta
                )
                print(
                    "capabilities:",
                    ", ".join(f"{c.key} ({c.value_type})" for c in capabilities.capabilities),
                    flush=True,
                )
                synced = stub.Sync(datastream_pb2.DataRequest(keys=args.keys), timeout=10, metadata=meta)
                for key in sorted(synced.data):
                    print("sync:", show(synced.data[key]), flush=True)
                for response in stub.Subscribe(datastream_pb2.DataRequest(keys=args.keys), metadata=meta):
                    backoff = 0.2
                    for key in sorted(response.data):
                        data = response.data[key]
                        if key not in latest or latest[key].revision < data.revision or not data.revision:
                            latest[key] = data
                            print("update:", show(data), flush=True)
                    if args.once:
                        return 0
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            if code not in RETRYABLE:
                print(f"error: {code.name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
                return 1
            delay = backoff * (0.5 + random.random())
            print(f"reconnecting to {args.address} in {delay:.1f}s ({code.name})", file=sys.stderr, flush=True)
            if code == grpc.StatusCode.UNAVAILABLE and not latest and not hinted:
                print(f"  {UNREACHABLE_HINT}", file=sys.stderr, flush=True)
                hinted = True
            time.sleep(delay)
            backoff = min(backoff * 2, args.max_backoff)


if __name__ == "__main__":
    sys.exit(main())
