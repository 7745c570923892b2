#!/usr/bin/env python
"""Push one value over gRPC, like the original updater: max_connections = 20 by default.

python examples/updater.py [--address HOST:PORT] [--key max_connections] [--value 20] [--type int]

The address defaults to DATASTREAM_ADDRESS, else 127.0.0.1:$GRPC_PORT (50051 when unset).
"""

from __future__ import annotations

import argparse
import sys

from common import ROOT, UNREACHABLE_HINT, add_connection_arguments, quiet_library

sys.path.insert(0, str(ROOT))
from datastream_client import Client, DatastreamError, Unavailable, codec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_arguments(parser)
    parser.add_argument("--key", default="max_connections")
    parser.add_argument("--value", default="20", help="the value's wire text")
    parser.add_argument("--type", default="int", help="value_type (empty: the key's own)")
    args = parser.parse_args()
    quiet_library()
    client = Client(args.address, token=args.token, tls=args.ca, client_name="examples/updater.py")
    try:
        kind = codec.parse_value_type(args.type) if args.type else None
        kind = kind or codec.parse_value_type(client.capabilities()[args.key])
        client.set(args.key, codec.decode_wire(kind, args.value.encode()), value_type=kind.value)
    except DatastreamError as error:
        print(f"push failed: {error.describe()}", file=sys.stderr)
        if isinstance(error, Unavailable):
            print(f"  (server at {args.address}) {UNREACHABLE_HINT}", file=sys.stderr)
        return 1
    except KeyError:
        print(f"push failed: NOT_FOUND: unknown key {args.key!r}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"pushed {args.key} = {args.value} to {args.address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
