"""The floor: a bare grpc.aio fan-out server speaking datastream's wire protocol, and nothing more.

Run as ``python -m bench.floor --port P``. It holds the benchmark keys (int 0)
in a dict and fans every PushUpdate out to the Subscribe streams on those keys:
no Django, no database, no channel layer, no interceptors or logging. It runs
with the server options, event loop and GC tuning datastream's gRPC server
uses, so what datastream costs beyond it is datastream's own and what it costs
is grpc.aio's per-stream price.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import time
from typing import Any

import grpc
import uvloop

from bench.common import ALL_KEYS
from protos import datastream_pb2

SERVICE_NAME = "datastream.DataService"
VALUE_TYPE = "int"

# datastream_app/conf.py DEFAULTS["GC_THRESHOLDS"] (copied: the floor imports no Django code).
GC_THRESHOLDS = (100_000, 50, 1000)
# datastream_app/conf.py DEFAULTS["MAX_VALUE_BYTES"] plus the 64 KiB server_options() adds.
MAX_MESSAGE = 1024 * 1024 + 64 * 1024


def server_options() -> list[tuple[str, Any]]:
    """The literal channel arguments of datastream_app/rpc/server.py server_options()."""
    return [
        ("grpc.server.max_pending_requests", 100_000),
        ("grpc.server.max_pending_requests_hard_limit", 200_000),
        ("grpc.max_concurrent_streams", 100_000),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


def encode_int(value: int) -> bytes:
    """An int's wire bytes, as datastream's encode_wire writes them: its decimal text."""
    return str(int(value)).encode()


def frame(key: str, value: bytes, revision: int, updated_at_ns: int) -> bytes:
    """A serialised DataResponse holding one key; such frames concatenate into one valid DataResponse."""
    data = datastream_pb2.Data(key=key, value=value, value_type=VALUE_TYPE, revision=revision)
    data.updated_at.FromNanoseconds(updated_at_ns // 1000 * 1000)
    response = datastream_pb2.DataResponse()
    response.data[key].CopyFrom(data)
    return response.SerializeToString()


class Stream:
    """One Subscribe stream: the latest unsent frame per key and, while it waits, the future that wakes it."""

    __slots__ = ("pending", "waiter")

    def __init__(self) -> None:
        self.pending: dict[str, bytes] = {}
        self.waiter: asyncio.Future[None] | None = None

    def offer(self, key: str, encoded: bytes) -> None:
        """Queue ``encoded`` as the latest frame of ``key`` and wake the stream if it waits."""
        self.pending[key] = encoded
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_frame(self) -> bytes:
        """Wait for pending frames and return them as one DataResponse."""
        while not self.pending:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        pending, self.pending = self.pending, {}
        return b"".join(pending.values())


class Store:
    """Key -> (value type, wire bytes, revision) with the streams on each key."""

    def __init__(self, keys: list[str]) -> None:
        now = time.time_ns()
        self.revision = 0
        self.values: dict[str, tuple[str, bytes, int]] = {}
        # The serialised one-key DataResponse of every current value: built once per change.
        self.frames: dict[str, bytes] = {}
        self.streams: dict[str, set[Stream]] = {key: set() for key in keys}
        for key in keys:
            self.set(key, encode_int(0), now)

    def set(self, key: str, value: bytes, now: int) -> bytes:
        """Store ``value`` under the next revision and return its frame."""
        self.revision += 1
        self.values[key] = (VALUE_TYPE, value, self.revision)
        encoded = frame(key, value, self.revision, now)
        self.frames[key] = encoded
        return encoded

    def keys_of(self, request: datastream_pb2.DataRequest) -> list[str]:
        """The requested keys without repeats (none: all); KeyError naming the first unknown one."""
        keys = list(dict.fromkeys(request.keys)) or list(self.values)
        for key in keys:
            if key not in self.values:
                raise KeyError(key)
        return keys

    def snapshot(self, keys: list[str]) -> bytes:
        """The current values of ``keys`` as one serialised DataResponse."""
        return b"".join(self.frames[key] for key in keys)


class FloorServicer:
    """Sync, Subscribe, PushUpdate and ListCapabilities over the in-memory store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def ListCapabilities(
        self, request: datastream_pb2.ListCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> datastream_pb2.ListCapabilitiesResponse:
        """Every key with its value type."""
        return datastream_pb2.ListCapabilitiesResponse(
            capabilities=[
                datastream_pb2.Capability(key=key, value_type=t) for key, (t, _, _) in self.store.values.items()
            ]
        )

    async def Sync(self, request: datastream_pb2.DataRequest, context: grpc.aio.ServicerContext) -> bytes:
        """Current values of the requested keys (none: all)."""
        try:
            keys = self.store.keys_of(request)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown key {exc.args[0]!r}")
            raise  # abort() raises; this line only tells readers that nothing follows
        return self.store.snapshot(keys)

    async def Subscribe(self, request: datastream_pb2.DataRequest, context: grpc.aio.ServicerContext) -> None:
        """The current values, then one message per wake-up with the latest value of each changed key."""
        # A coroutine writing with context.write() and a bare future per stream:
        # the leanest grpc.aio streaming shape, as datastream's servicer uses.
        try:
            keys = self.store.keys_of(request)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown key {exc.args[0]!r}")
            return
        stream = Stream()
        # Registering and reading the snapshot with no await in between: no change can fall in the gap.
        for key in keys:
            self.store.streams[key].add(stream)
        try:
            await context.write(self.store.snapshot(keys))
            while True:
                await context.write(await stream.next_frame())
        finally:
            for key in keys:
                self.store.streams[key].discard(stream)

    async def PushUpdate(self, request: datastream_pb2.Data, context: grpc.aio.ServicerContext) -> bytes:
        """Set one int key and hand its frame, serialised once, to every stream on it."""
        if request.key not in self.store.values:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown key {request.key!r}")
        if request.value_type not in ("", VALUE_TYPE):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{request.key!r} is an int")
        try:
            value = encode_int(int(request.value))
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an integer")
            raise  # abort() raises; this line only tells readers that nothing follows
        encoded = self.store.set(request.key, value, time.time_ns())
        for stream in self.store.streams[request.key]:
            stream.offer(request.key, encoded)
        # google.protobuf.Empty serialises to no bytes.
        return b""


def _serialize(message: bytes | Any) -> bytes:
    # Subscribe and Sync hand over pre-serialised DataResponse bytes, as datastream's servicer does.
    if isinstance(message, bytes):
        return message
    serialized: bytes = message.SerializeToString()
    return serialized


def add_servicer(servicer: FloorServicer, server: grpc.aio.Server) -> None:
    """Register the four methods with the pass-through response serializer."""
    unary, stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    methods = {
        "ListCapabilities": (unary, datastream_pb2.ListCapabilitiesRequest),
        "Sync": (unary, datastream_pb2.DataRequest),
        "Subscribe": (stream, datastream_pb2.DataRequest),
        "PushUpdate": (unary, datastream_pb2.Data),
    }
    handlers = {
        name: kind(getattr(servicer, name), request_deserializer=request.FromString, response_serializer=_serialize)
        for name, (kind, request) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def serve(port: int, grace: float) -> None:
    """Serve on 127.0.0.1:``port`` until SIGINT or SIGTERM."""
    server = grpc.aio.server(options=server_options(), maximum_concurrent_rpcs=None)
    add_servicer(FloorServicer(Store(ALL_KEYS)), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC to 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor: gRPC on 127.0.0.1:{bound}, {len(ALL_KEYS)} int keys", flush=True)
    await stop.wait()
    await server.stop(grace)


def tune_gc() -> None:
    """datastream's tune_gc(): higher cyclic GC thresholds, and what start-up allocated frozen."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


def main() -> None:
    """Parse the options and serve on uvloop."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="loopback port for gRPC (0: any free one)")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds open streams get on shutdown")
    args = parser.parse_args()
    # Where datastream's serve command calls it: after imports, before the loop starts.
    tune_gc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, args.grace))


if __name__ == "__main__":
    main()
