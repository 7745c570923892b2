"""The ``datastream`` command: list, read, write and watch settings.

    datastream ls [PREFIX]                      keys with their types, one per line
    datastream get KEY... [--json]              one key: just its value; several: KEY<TAB>VALUE lines
    datastream set KEY VALUE [--type T]         prints the key's new revision
    datastream watch [KEY...] [--json]          current values, then one line per change, until Ctrl-C

``--target`` (default ``$DATASTREAM_TARGET``, else 127.0.0.1:50051), ``--token``
(default ``$DATASTREAM_TOKEN``), ``--ca`` (a CA file: TLS). Values are shown in
their text form (bytes as base64, json as compact JSON); ``--json`` prints JSON.
Exit codes: 0 ok, 1 the server said no (``CODE: reason`` on stderr), 2 usage,
3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from datastream_client import codec
from datastream_client._wire import DEFAULT_TARGET, Connection
from datastream_client.client import Change, Client, State
from datastream_client.errors import DatastreamError, InvalidValue, Unavailable

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3


def text_of(kind: codec.ValueType, value: Any) -> str:
    """One-line text of a value: the wire text, bytes as base64."""
    if kind is codec.ValueType.BYTES:
        return codec.to_text(kind, value)
    return codec.encode_wire(kind, value).decode("utf-8")


def parser() -> argparse.ArgumentParser:
    """The argument parser (``datastream --help``)."""
    root = argparse.ArgumentParser(prog="datastream", description="Read, write and watch datastream settings.")
    root.add_argument("--target", default=os.environ.get("DATASTREAM_TARGET") or DEFAULT_TARGET, help="HOST:PORT")
    root.add_argument("--token", default=os.environ.get("DATASTREAM_TOKEN") or None, help="API token")
    root.add_argument("--ca", default=None, help="CA certificate file: connect with TLS")
    root.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")
    commands = root.add_subparsers(dest="command", required=True)
    ls = commands.add_parser("ls", help="keys with their types")
    ls.add_argument("prefix", nargs="?", default="")
    get = commands.add_parser("get", help="values of keys")
    get.add_argument("keys", nargs="+", metavar="KEY")
    get.add_argument("--json", action="store_true", help="print JSON")
    put = commands.add_parser("set", help="set a key; prints its new revision")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help='text form: 10, true, 0.5, text, {"a": 1}; bytes as base64')
    put.add_argument("--type", choices=codec.VALUE_TYPES, help="the key's type (default: asked from the server)")
    put.add_argument("--expect-revision", type=int, metavar="N", help="compare-and-set (not supported yet)")
    watch = commands.add_parser("watch", help="print changes as they happen")
    watch.add_argument("keys", nargs="*", metavar="KEY")
    watch.add_argument("--json", action="store_true", help="print one JSON object per line")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    tls = args.ca
    try:
        if args.command == "watch":
            return _watch(args, tls)
        conn = Connection(args.target, token=args.token, tls=tls, client_name="datastream-cli")
        try:
            return {"ls": _ls, "get": _get, "set": _set}[args.command](conn, args)
        finally:
            conn.close()
    except Unavailable as exc:
        print(f"{exc.describe()} ({args.target})", file=sys.stderr)
        return UNREACHABLE
    except DatastreamError as exc:
        print(exc.describe(), file=sys.stderr)
        return REFUSED
    except OSError as exc:  # the CA file
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return OK


def _ls(conn: Connection, args: argparse.Namespace) -> int:
    for key, kind in sorted(conn.capabilities(timeout=args.timeout).items()):
        if key.startswith(args.prefix):
            print(f"{key}\t{kind}")
    return OK


def _get(conn: Connection, args: argparse.Namespace) -> int:
    keys = list(dict.fromkeys(args.keys))
    synced = conn.sync(keys, timeout=args.timeout)
    values: dict[str, tuple[codec.ValueType, Any]] = {}
    for key in keys:
        data = synced[key]
        kind = codec.parse_value_type(data.value_type)
        values[key] = (kind, codec.decode_wire(kind, data.value))
    if args.json:
        shown = {key: codec.to_json(kind, value) for key, (kind, value) in values.items()}
        print(json.dumps(shown[keys[0]] if len(keys) == 1 else shown, ensure_ascii=False))
    elif len(keys) == 1:
        print(text_of(*values[keys[0]]))
    else:
        for key, (kind, value) in values.items():
            print(f"{key}\t{text_of(kind, value)}")
    return OK


def _set(conn: Connection, args: argparse.Namespace) -> int:
    if args.expect_revision is not None:
        print("UNIMPLEMENTED: compare-and-set (--expect-revision) is not supported by the server yet", file=sys.stderr)
        return REFUSED
    value_type = args.type or conn.capabilities(timeout=args.timeout).get(args.key, "")
    if value_type == codec.ValueType.BYTES:
        try:
            raw = codec.from_text(codec.ValueType.BYTES, args.value)
        except InvalidValue as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return USAGE
    else:
        # The text form is the wire form: the server parses it and says what is wrong with it.
        raw = args.value.encode("utf-8")
    print(conn.push_revision(args.key, raw, value_type))
    return OK


def _line(change: Change, as_json: bool) -> str:
    kind = codec.ValueType(change.value_type)
    if as_json:
        shown = None if change.deleted else codec.to_json(kind, change.value)
        record = {"key": change.key, "value": shown, "value_type": change.value_type, "revision": change.revision}
        if change.deleted:
            record["deleted"] = True
        return json.dumps(record, ensure_ascii=False)
    if change.deleted:
        return f"{change.key} deleted (rev {change.revision})"
    return f"{change.key} = {text_of(kind, change.value)} ({change.value_type}) rev {change.revision}"


def _watch(args: argparse.Namespace, tls: Any) -> int:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client = Client(args.target, token=args.token, keys=args.keys or None, tls=tls, client_name="datastream-cli")

    def show(change: Change) -> None:
        print(_line(change, args.json), flush=True)

    client.on_change(show)
    client.start(timeout=args.timeout)
    try:
        while not done.wait(0.2):
            status = client.status
            if status.state is State.FAILED and status.error is not None:
                print(status.error.describe(), file=sys.stderr)
                return REFUSED
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return OK
