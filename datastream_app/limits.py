"""Per-token limits enforced in each process: concurrent streams and push rate."""

from __future__ import annotations

import threading
import time

from datastream_app.access import Principal
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import LimitExceeded


class StreamLimiter:
    """Counts open Subscribe streams per token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}

    def acquire(self, principal: Principal) -> None:
        """Take one stream slot of ``principal``'s token; LimitExceeded when none is left."""
        token = principal.token_id
        if token is None:
            return
        limit = principal.max_streams or datastream_settings.MAX_STREAMS_PER_TOKEN
        with self._lock:
            if self._open.get(token, 0) >= limit:
                raise LimitExceeded(f"limit of {limit} concurrent streams per token reached for {principal.name}")
            self._open[token] = self._open.get(token, 0) + 1

    def release(self, principal: Principal) -> None:
        """Give back a slot taken by acquire()."""
        token = principal.token_id
        if token is None:
            return
        with self._lock:
            self._open[token] -= 1
            if not self._open[token]:
                del self._open[token]


class RateLimiter:
    """A token bucket per token: ``rate`` pushes per second, bursts up to twice that."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, principal: Principal) -> None:
        """Spend one push of ``principal``'s token; LimitExceeded when the bucket is empty."""
        token = principal.token_id
        rate = float(datastream_settings.PUSH_RATE_PER_TOKEN)
        if token is None or rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.get(token, (2 * rate, now))
            level = min(2 * rate, level + (now - last) * rate)
            if level < 1:
                raise LimitExceeded(f"push rate limit of {rate:g}/s per token exceeded for {principal.name}")
            self._buckets[token] = (level - 1, now)


streams = StreamLimiter()
pushes = RateLimiter()
