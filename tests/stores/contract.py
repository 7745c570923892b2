"""The store contract: every backend's test module imports these tests and provides a ``harness`` fixture.

A harness seeds the backend with ``harness.samples`` and says how another
program changes the source (``outside_write``) and how the store notices
(``notice``: a refresh for external stores, nothing for the model store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from datastream_app import codec
from datastream_app.exceptions import InvalidValue, NotFound, TypeMismatch
from datastream_app.models import SettingChange
from datastream_app.stores.base import Store


@dataclass(frozen=True)
class Sample:
    """A seeded key: its type, initial wire value, another valid value and (if any) an invalid one."""

    value_type: str
    initial: bytes
    other: bytes
    invalid: bytes | None = None


@dataclass
class Harness:
    """A backend under test."""

    store: Store
    samples: dict[str, Sample]
    outside_write: Callable[[str, str, bytes], None]
    config: dict[str, Any]
    notice: Callable[[], None] = field(default=lambda: None)


def wire(raw: bytes) -> Callable[[codec.ValueType, dict[str, Any] | None, bool], bytes]:
    """A decoder that parses ``raw`` as the key's type, as gRPC PushUpdate does."""
    return lambda kind, schema, secret: codec.encode_wire(kind, codec.decode_wire(kind, raw, schema))


def a_key(harness: Harness) -> str:
    return sorted(harness.samples)[0]


def test_contract_capabilities__seeded__every_key_with_its_type_sorted(harness):
    capabilities = harness.store.capabilities()

    assert [(c.key, c.value_type) for c in capabilities] == sorted(
        (k, s.value_type) for k, s in harness.samples.items()
    )


def test_contract_get_many__present_and_missing__only_present(harness):
    key = a_key(harness)
    missing = harness.store.prefix + "no/such/key"

    entries = harness.store.get_many([key, missing])

    assert list(entries) == [key]
    assert entries[key].value == harness.samples[key].initial
    assert entries[key].value_type == harness.samples[key].value_type
    assert entries[key].revision > 0


def test_contract_get_many__none__every_key(harness):
    entries = harness.store.get_many(None)

    assert {k: e.value for k, e in entries.items()} == {k: s.initial for k, s in harness.samples.items()}


def test_contract_put__valid_value__stored_with_a_new_revision_and_history(harness):
    key = a_key(harness)
    sample = harness.samples[key]
    before = harness.store.get_many([key])[key]

    entry = harness.store.put(key, value_type=sample.value_type, decode=wire(sample.other))

    assert entry.value == sample.other
    assert entry.revision > before.revision
    assert harness.store.get_many([key])[key].value == sample.other
    assert harness.store.current_revision() >= entry.revision
    change = SettingChange.objects.get(revision=entry.revision)
    assert (change.key, bytes(change.old_value), bytes(change.new_value)) == (key, sample.initial, sample.other)


def test_contract_put__empty_value_type__takes_the_keys_type(harness):
    key = a_key(harness)

    entry = harness.store.put(key, value_type="", decode=wire(harness.samples[key].other))

    assert entry.value_type == harness.samples[key].value_type


def test_contract_put__same_value__no_new_revision(harness):
    key = a_key(harness)
    before = harness.store.get_many([key])[key]

    entry = harness.store.put(key, value_type="", decode=wire(harness.samples[key].initial))

    assert entry.revision == before.revision


def _unchanged_after(harness: Harness, error: type[Exception], key: str, value_type: str, raw: bytes) -> None:
    before = harness.store.get_many(None)
    revision = harness.store.current_revision()
    history = SettingChange.objects.count()

    with pytest.raises(error):
        harness.store.put(key, value_type=value_type, decode=wire(raw))

    harness.notice()
    assert harness.store.get_many(None) == before
    assert harness.store.current_revision() == revision
    assert SettingChange.objects.count() == history


def test_contract_put__invalid_value__invalid_value_and_nothing_changes(harness):
    key, sample = next((k, s) for k, s in sorted(harness.samples.items()) if s.invalid is not None)

    _unchanged_after(harness, InvalidValue, key, sample.value_type, sample.invalid or b"")


def test_contract_put__other_value_type__type_mismatch_and_nothing_changes(harness):
    key = a_key(harness)
    other_type = "bytes" if harness.samples[key].value_type != "bytes" else "int"

    _unchanged_after(harness, TypeMismatch, key, other_type, harness.samples[key].other)


def test_contract_put__unknown_key__not_found_and_nothing_changes(harness):
    _unchanged_after(harness, NotFound, harness.store.prefix + "no/such/key", "", b"1")


def test_contract_outside_write__noticed__new_value_and_revision(harness):
    key = a_key(harness)
    sample = harness.samples[key]
    revision = harness.store.current_revision()

    harness.outside_write(key, sample.value_type, sample.other)
    harness.notice()

    assert harness.store.get_many([key])[key].value == sample.other
    assert list(harness.store.changed_since(revision)) == [key]


async def test_contract_watch__writes_through_the_store_and_from_outside__reach_a_subscriber(harness):
    from asgiref.sync import sync_to_async

    from protos import datastream_pb2
    from tests.conftest import serving

    key = a_key(harness)
    sample = harness.samples[key]
    stores = {
        "default": {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""},
        harness.store.alias: harness.config,
    }
    if harness.store.alias == "default":
        stores = {"default": harness.config}
    async with serving(DATASTREAM={"STORES": stores}) as (service, stub):
        call = stub.Subscribe(datastream_pb2.DataRequest(keys=[key]))
        first = await asyncio.wait_for(call.read(), 10)
        await stub.PushUpdate(datastream_pb2.Data(key=key, value=sample.other))
        through_store = await asyncio.wait_for(call.read(), 10)
        await sync_to_async(harness.outside_write, thread_sensitive=False)(key, sample.value_type, sample.initial)
        service.watchers.wake(harness.store.alias)
        from_outside = await asyncio.wait_for(call.read(), 10)
        call.cancel()

    assert first.data[key].value == sample.initial
    assert through_store.data[key].value == sample.other
    assert from_outside.data[key].value == sample.initial
