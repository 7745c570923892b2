#!/usr/bin/env python
"""Push one value over gRPC, like the original updater: max_connections = 20 by default.

python examples/updater.py [--target 127.0.0.1:50051] [--key max_connections] [--value 20] [--type int]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import auth_metadata, open_channel

from protos import datastream_pb2, datastream_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--token", default=os.environ.get("DATASTREAM_TOKEN"), help="API token (or DATASTREAM_TOKEN)")
    parser.add_argument("--ca", default=None, help="CA certificate file: connect with TLS")
    parser.add_argument("--key", default="max_connections")
    parser.add_argument("--value", default="20", help="the value's wire text")
    parser.add_argument("--type", default="int", help="value_type (empty: the key's own)")
    args = parser.parse_args()
    with open_channel(args.target, args.ca) as channel:
        stub = datastream_pb2_grpc.DataServiceStub(channel)
        try:
            stub.PushUpdate(
                datastream_pb2.Data(key=args.key, value=args.value.encode(), value_type=args.type),
                timeout=10,
                metadata=auth_metadata(args.token),
            )
        except grpc.RpcError as error:
            print(f"push failed: {error.code().name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    print(f"pushed {args.key} = {args.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
