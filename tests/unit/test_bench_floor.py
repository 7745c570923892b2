"""The benchmark's floor server stays configured like datastream's gRPC server, so the comparison stays fair."""

from __future__ import annotations

from bench import floor
from datastream_app.conf import datastream_settings
from datastream_app.rpc.server import server_options


def test_floor_server_options__same_as_datastreams():
    assert floor.server_options() == server_options()


def test_floor_gc_thresholds__same_as_datastreams():
    assert tuple(datastream_settings.GC_THRESHOLDS) == floor.GC_THRESHOLDS
