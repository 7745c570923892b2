#!/usr/bin/env python
"""Push one value over gRPC, like the original updater: max_connections = 20 by default.

python examples/updater.py [--address HOST:PORT] [--key max_connections] [--value 20] [--type int]

The address defaults to DATASTREAM_ADDRESS, else 127.0.0.1:$GRPC_PORT (50051 when unset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import UNREACHABLE_HINT, add_connection_arguments, auth_metadata, open_channel

from protos import datastream_pb2, datastream_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_arguments(parser)
    parser.add_argument("--key", default="max_connections")
    parser.add_argument("--value", default="20", help="the value's wire text")
    parser.add_argument("--type", default="int", help="value_type (empty: the key's own)")
    args = parser.parse_args()
    with open_channel(args.address, args.ca) as channel:
        stub = datastream_pb2_grpc.DataServiceStub(channel)
        try:
            stub.PushUpdate(
                datastream_pb2.Data(key=args.key, value=args.value.encode(), value_type=args.type),
                timeout=10,
                metadata=auth_metadata(args.token),
            )
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            print(f"push failed: {code.name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAVAILABLE:
                print(f"  (server at {args.address}) {UNREACHABLE_HINT}", file=sys.stderr)
            return 1
    print(f"pushed {args.key} = {args.value} to {args.address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
