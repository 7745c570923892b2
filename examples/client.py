#!/usr/bin/env python
"""List capabilities, sync, then subscribe and print every update; reconnects with backoff.

python examples/client.py [--address HOST:PORT] [--once] [keys ...]

The address defaults to DATASTREAM_ADDRESS, else 127.0.0.1:$GRPC_PORT (the port
`make run` serves gRPC on; 50051 when unset). It is printed, with every retry.
Built on the client library (datastream_client): one stream, resumed from the
revision held after a reconnect.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import random
import sys
import time

from common import ROOT, UNREACHABLE_HINT, add_connection_arguments, quiet_library, show

sys.path.insert(0, str(ROOT))
from datastream_client import Client, DatastreamError, Unavailable
from datastream_client.client import Change, State


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_arguments(parser)
    parser.add_argument("--once", action="store_true", help="print the first message of Subscribe and exit")
    parser.add_argument("--max-backoff", type=float, default=10.0)
    parser.add_argument("keys", nargs="*", help="keys to watch (default: all)")
    args = parser.parse_args()
    quiet_library()
    try:
        return watch(args)
    except KeyboardInterrupt:  # Ctrl-C, also while waiting to reconnect
        return 0


def connect(args: argparse.Namespace, changes: queue.SimpleQueue[Change]) -> Client:
    """A started client (capabilities and sync printed); retried with jittered backoff while unreachable."""
    backoff, hinted = 0.2, False
    print(f"connecting to {args.address}", file=sys.stderr, flush=True)
    while True:
        client = Client(
            args.address,
            token=args.token,
            keys=args.keys or None,
            tls=args.ca,
            client_name="examples/client.py",
            backoff_cap=args.max_backoff,
        )
        client.on_change(changes.put)  # before start(): the first message's values are updates too
        try:
            capabilities = client.capabilities()
            client.start(timeout=10)
        except Unavailable as error:
            client.close()
            delay = backoff * (0.5 + random.random())
            print(f"reconnecting to {args.address} in {delay:.1f}s ({error.code})", file=sys.stderr, flush=True)
            if not hinted:
                print(f"  {UNREACHABLE_HINT}", file=sys.stderr, flush=True)
                hinted = True
            time.sleep(delay)
            backoff = min(backoff * 2, args.max_backoff)
            continue
        print("capabilities:", ", ".join(f"{key} ({kind})" for key, kind in capabilities.items()), flush=True)
        for key, value in client.items():
            print("sync:", show(key, value, client.value_type(key), client.revision_of(key)), flush=True)
        return client


def line(change: Change) -> str:
    """An update line: the new value, or the deletion."""
    if change.deleted:
        return f"update: {change.key} deleted rev {change.revision}"
    return "update: " + show(change.key, change.value, change.value_type, change.revision)


def watch(args: argparse.Namespace) -> int:
    """Print each change as it arrives, and when the stream breaks and comes back."""
    changes: queue.SimpleQueue[Change] = queue.SimpleQueue()
    try:
        client = connect(args, changes)
    except DatastreamError as error:  # refused: a bad token, a key it may not read, an unknown key
        print(f"error: {error.describe()}", file=sys.stderr)
        return 1
    with client:
        if args.once:
            for key, value in client.items():
                print("update:", show(key, value, client.value_type(key), client.revision_of(key)), flush=True)
            return 0
        state = State.LIVE
        while True:
            with contextlib.suppress(queue.Empty):
                print(line(changes.get(timeout=0.2)), flush=True)
            status = client.status
            if status.state is state:
                continue
            state = status.state
            reason = f" ({status.error.describe()})" if status.error is not None else ""
            if state is State.FAILED:
                print(f"error:{reason}", file=sys.stderr)
                return 1
            if state is State.RECONNECTING:
                print(f"reconnecting to {args.address}{reason}", file=sys.stderr, flush=True)
            elif state is State.LIVE:
                print(f"connected to {args.address} again", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
