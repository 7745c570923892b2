"""Key names and small statistics shared by the harness and its worker processes."""

from __future__ import annotations

import math
from collections.abc import Sequence

HOT_KEY = "bench.hot"
KEY_COUNT = 1000
# The description seeded keys carry (an admin save posts it back unchanged).
KEY_DESCRIPTION = "benchmark key"
KEYS = [f"bench.k{i:04d}" for i in range(KEY_COUNT)]
ALL_KEYS = [HOT_KEY, *KEYS]

OURS = "datastream"
ETCD = "etcd"
# A bare grpc.aio server on datastream's wire protocol (bench/floor.py): the least a grpc.aio server costs.
FLOOR = "floor"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
