"""One contract, every store: the same tests run against each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datastream_app import codec
from datastream_app.exceptions import InvalidValue, NotFound, TypeMismatch
from datastream_app.stores.base import Store
from datastream_app.stores.memory import MemoryStore
from datastream_app.stores.model import ModelStore
from tests.conftest import DEMO, make_settings

# Every test gets a database, so the model store's rows are cleared after each.
pytestmark = pytest.mark.django_db(transaction=True)

INITIAL = {key: (kind, codec.decode_wire(codec.ValueType(kind), value)) for key, kind, value in DEMO}


def wire(raw: bytes):
    """A decoder that parses ``raw`` as the key's type, as gRPC PushUpdate does."""
    return lambda kind, schema: codec.decode_wire(kind, raw, schema)


@pytest.fixture(params=["model", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each backend, holding the demo keys."""
    if request.param == "model":
        make_settings()
        yield ModelStore(alias="default")
    else:
        yield MemoryStore(alias="memory", keys=INITIAL)


def test_capabilities__demo_keys__every_key_with_its_type_sorted(store):
    capabilities = store.capabilities()

    assert [(c.key, c.value_type) for c in capabilities] == sorted((k, kind) for k, (kind, _) in INITIAL.items())


def test_get_many__present_and_missing__only_present_returned(store):
    entries = store.get_many(["max_connections", "missing"])

    assert list(entries) == ["max_connections"]
    assert entries["max_connections"].value == b"10"
    assert entries["max_connections"].value_type == "int"
    assert entries["max_connections"].revision > 0


def test_get_many__none__every_key(store):
    assert set(store.get_many(None)) == set(INITIAL)


def test_put__valid_value__new_entry_with_higher_revision(store):
    before = store.get_many(["max_connections"])["max_connections"]

    entry = store.put("max_connections", value_type="int", decode=wire(b"25"))

    assert entry.value == b"25"
    assert entry.revision > before.revision
    assert store.get_many(["max_connections"])["max_connections"] == entry
    assert store.current_revision() >= entry.revision


def test_put__empty_value_type__takes_the_keys_type(store):
    entry = store.put("ratio", value_type="", decode=wire(b"2.5"))

    assert (entry.value, entry.value_type) == (b"2.5", "float")


def test_put__same_value__no_new_revision(store):
    before = store.get_many(["rate_limit"])["rate_limit"]

    entry = store.put("rate_limit", value_type="int", decode=wire(b"1000"))

    assert entry.revision == before.revision


@pytest.mark.parametrize(
    ("key", "value_type", "raw", "error"),
    [
        ("max_connections", "int", b"ten", InvalidValue),
        ("debug_enabled", "bool", b"maybe", InvalidValue),
        ("limits", "json", b"{", InvalidValue),
        ("max_connections", "string", b"10", TypeMismatch),
        ("missing", "int", b"1", NotFound),
    ],
)
def test_put__bad_write__raises_and_changes_nothing(store, key, value_type, raw, error):
    before = store.get_many(None)
    revision = store.current_revision()

    with pytest.raises(error):
        store.put(key, value_type=value_type, decode=wire(raw))

    assert store.get_many(None) == before
    assert store.current_revision() == revision


def test_changed_since__after_a_put__only_that_key(store):
    revision = store.current_revision()

    store.put("greeting", value_type="string", decode=wire(b"bye"))

    changed = store.changed_since(revision)
    assert list(changed) == ["greeting"]
    assert changed["greeting"].value == b"bye"


async def test_async_variants__same_results(store):
    capabilities = await store.acapabilities()
    entries = await store.aget_many(["max_connections"])
    entry = await store.aput("max_connections", value_type="int", decode=wire(b"7"))

    assert [c.key for c in capabilities] == sorted(INITIAL)
    assert entries["max_connections"].value == b"10"
    assert entry.value == b"7"
