"""The contract against the reference external store (a dict as the source), plus its failure isolation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datastream_app import services
from datastream_app.exceptions import Aborted, Unavailable
from datastream_app.models import Setting
from datastream_app.stores.memory import MemoryStore
from tests.stores.contract import *  # noqa: F403 - the contract's tests run here
from tests.stores.contract import Harness, Sample, wire
from tests.stores.mirrored_contract import *  # noqa: F403 - and the external stores' contract

pytestmark = pytest.mark.django_db(transaction=True)

SAMPLES = {
    "mem/max_connections": Sample("int", b"10", b"25", b"ten"),
    "mem/flags.json": Sample("json", b'{"a":1}', b'{"a":2}', b"{"),
    "mem/motd": Sample("string", b"hello", b"bye"),
    "mem/blob": Sample("bytes", b"\x00\x01", b"\x02"),
}
CONFIG = {
    "BACKEND": "datastream_app.stores.memory.MemoryStore",
    "PREFIX": "mem/",
    "OPTIONS": {"poll_interval": 0.2, "keys": {}},
}


@pytest.fixture
def harness() -> Iterator[Harness]:
    MemoryStore.forget("mem")
    store = MemoryStore(alias="mem", prefix="mem/", poll_interval=0.2)
    for key, sample in SAMPLES.items():
        store.src.set(key, sample.value_type, sample.initial)
    store.refresh()

    def outside_write(key: str, value_type: str, value: bytes) -> None:
        store.src.set(key, value_type, value)

    yield Harness(store=store, samples=SAMPLES, outside_write=outside_write, config=CONFIG, notice=store.refresh)
    MemoryStore.forget("mem")


def test_memory_put__source_moved_on__aborted_and_copy_unchanged(harness):
    store = harness.store
    store.src.set("mem/motd", "string", b"changed elsewhere")

    with pytest.raises(Aborted):
        store.put("mem/motd", value_type="string", decode=wire(b"mine"))

    assert store.src.items["mem/motd"] == ("string", b"changed elsewhere")
    assert store.get_many(["mem/motd"])["mem/motd"].value == b"hello"


def test_memory_refresh__source_unreachable__only_its_keys_unavailable(harness):
    Setting.objects.create(key="max_connections", value_type="int", value=b"10")
    harness.store.src.reachable = False
    stores = {"default": {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""}, "mem": CONFIG}

    from django.test import override_settings

    with override_settings(DATASTREAM={"STORES": stores}):
        with pytest.raises(Unavailable, match="mem"):
            harness.store.refresh()
        with pytest.raises(Unavailable, match="mem"):
            services.get_entries(keys=["mem/motd"])
        assert services.get_entries(keys=["max_connections"])["max_connections"].value == b"10"
        # Listing everything leaves the unreachable mount's keys out instead of failing.
        assert [c.key for c in services.list_capabilities()] == ["max_connections"]
        assert list(services.get_entries(keys=[])) == ["max_connections"]

        harness.store.src.reachable = True
        harness.store.src.set("mem/motd", "string", b"while away")
        harness.store.refresh()
        assert services.get_entries(keys=["mem/motd"])["mem/motd"].value == b"while away"


def test_memory_refresh__key_deleted_at_the_source__gone_with_a_delete_record(harness):
    from datastream_app.models import SettingChange

    harness.store.src.delete("mem/blob")
    harness.store.refresh()

    assert "mem/blob" not in harness.store.get_many(None)
    assert SettingChange.objects.filter(key="mem/blob", action="delete", store="mem").exists()


def test_memory_refresh__invalid_value_at_the_source__last_valid_value_kept(harness):
    harness.store.src.set("mem/max_connections", "int", b"not a number")
    harness.store.refresh()

    assert harness.store.get_many(["mem/max_connections"])["mem/max_connections"].value == b"10"
