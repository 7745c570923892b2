"""The Setting model: global revisions, history rows, validation on save, and publish-after-commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import NotSupportedError, transaction

from datastream_app.audit import Interface, acting
from datastream_app.exceptions import InvalidKey, InvalidValue
from datastream_app.models import Revision, Setting, SettingChange
from datastream_app.publisher import GROUP, publisher

pytestmark = pytest.mark.django_db(transaction=True)


def make(key: str, value_type: str, value: bytes, **fields: Any) -> Setting:
    """Create and return one setting."""
    return Setting.objects.create(key=key, value_type=value_type, value=value, **fields)


def set_value(key: str, value: bytes) -> Setting:
    """Load ``key``, give it ``value`` and save it."""
    setting = Setting.objects.get(key=key)
    setting.value = value
    setting.save()
    return setting


def state() -> tuple[dict[str, tuple[bytes, str, int]], int, int]:
    """Every setting's value, type and revision; the revision counter; the history length."""
    settings = {s.key: (bytes(s.value), s.value_type, s.revision) for s in Setting.objects.all()}
    return settings, Revision.current(), SettingChange.objects.count()


# Revisions


def test_revision_current__no_change_yet__zero():
    assert Revision.current() == 0


def test_save__each_value_change__takes_the_next_global_revision():
    a = make("a", "int", b"1")
    b = make("b", "int", b"1")
    a_again = set_value("a", b"2")
    b_again = set_value("b", b"2")

    assert [a.revision, b.revision, a_again.revision, b_again.revision] == [1, 2, 3, 4]
    assert Revision.current() == 4
    assert Setting.objects.get(key="a").revision == 3


def test_save__same_value__no_revision_and_no_history():
    setting = make("a", "int", b"1")
    revision = setting.revision

    setting.description = "only the description"
    setting.save()

    assert Setting.objects.get(key="a").revision == revision
    assert Revision.current() == revision
    assert SettingChange.objects.count() == 1
    assert Setting.objects.get(key="a").description == "only the description"


def test_save__same_value_in_other_spelling__canonicalised_and_no_revision():
    setting = make("a", "int", b" 010 ")
    assert bytes(Setting.objects.get(key="a").value) == b"10"

    setting.value = b"+10"
    setting.save()

    assert Revision.current() == 1
    assert SettingChange.objects.count() == 1


def test_save__only_the_type_changes__takes_a_revision():
    setting = make("a", "int", b"1")

    setting.value_type = "string"
    setting.save()

    assert setting.revision == 2
    change = SettingChange.objects.get(revision=2)
    assert (change.value_type, bytes(change.old_value), bytes(change.new_value)) == ("string", b"1", b"1")


def test_save__update_fields_without_value__value_still_saved_with_revision():
    setting = make("a", "int", b"1")

    setting.value = b"2"
    setting.description = "d"
    setting.save(update_fields=["description"])

    stored = Setting.objects.get(key="a")
    assert (bytes(stored.value), stored.revision, stored.description) == (b"2", 2, "d")


def test_save__value_changes__updated_at_moves_forward():
    setting = make("a", "int", b"1")
    first = setting.updated_at

    set_value("a", b"2")

    assert Setting.objects.get(key="a").updated_at > first


# History


def test_create__in_code__history_row_with_code_interface():
    setting = make("a", "string", b"x")

    change = SettingChange.objects.get()
    assert change.setting_id == setting.pk
    assert (change.key, change.value_type, change.action) == ("a", "string", "create")
    assert (change.old_value, bytes(change.new_value)) == (None, b"x")
    assert (change.revision, change.actor, change.interface) == (1, "", Interface.CODE)
    assert change.changed_at == setting.updated_at


def test_save__inside_acting__history_names_actor_and_interface():
    make("a", "int", b"1")

    with acting("alice", Interface.REST):
        set_value("a", b"2")
    set_value("a", b"3")

    latest, middle, _ = SettingChange.objects.order_by("-revision")
    assert (middle.action, bytes(middle.old_value), bytes(middle.new_value)) == ("update", b"1", b"2")
    assert (middle.actor, middle.interface, middle.revision) == ("alice", "rest", 2)
    # The actor is scoped to the block.
    assert (latest.actor, latest.interface) == ("", "code")


def test_history__several_keys__one_row_per_change_in_revision_order():
    make("a", "int", b"1")
    make("b", "bool", b"true")
    set_value("a", b"5")

    rows = list(SettingChange.objects.values_list("revision", "key", "action"))
    assert rows == [(3, "a", "update"), (2, "b", "create"), (1, "a", "create")]


# Delete


def test_delete__setting__takes_a_revision_and_records_a_delete_row():
    setting = make("a", "int", b"7")
    make("b", "int", b"1")

    with acting("bob", Interface.ADMIN):
        setting.delete()

    assert not Setting.objects.filter(key="a").exists()
    assert Revision.current() == 3
    change = SettingChange.objects.get(revision=3)
    assert (change.key, change.action, change.value_type) == ("a", "delete", "int")
    assert (bytes(change.old_value), change.new_value, change.setting_id) == (b"7", None, None)
    assert (change.actor, change.interface) == ("bob", "admin")
    # The create row survives, detached from the deleted setting.
    assert SettingChange.objects.get(key="a", action="create").setting_id is None


# Validation


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"key": "a", "value_type": "int", "value": b"abc"}, InvalidValue),
        ({"key": "a", "value_type": "int", "value": b"99999999999999999999"}, InvalidValue),
        ({"key": "a", "value_type": "bool", "value": b"yes"}, InvalidValue),
        ({"key": "a", "value_type": "float", "value": b"inf"}, InvalidValue),
        ({"key": "a", "value_type": "string", "value": b"\xff"}, InvalidValue),
        ({"key": "a", "value_type": "json", "value": b"{"}, InvalidValue),
        ({"key": "a", "value_type": "json", "value": b"[" * 100_000}, InvalidValue),
        ({"key": "a", "value_type": "decimal", "value": b"1"}, InvalidValue),
        ({"key": "a", "value_type": "json", "value": b"1", "json_schema": {"type": "string"}}, InvalidValue),
        ({"key": "a", "value_type": "json", "value": b"1", "json_schema": {"type": 5}}, InvalidValue),
        ({"key": "a", "value_type": "int", "value": b"1", "json_schema": {"type": "integer"}}, InvalidValue),
        ({"key": "has space", "value_type": "int", "value": b"1"}, InvalidKey),
        ({"key": "", "value_type": "int", "value": b"1"}, InvalidKey),
        ({"key": "nul\x00", "value_type": "int", "value": b"1"}, InvalidKey),
        ({"key": "trailing\n", "value_type": "int", "value": b"1"}, InvalidKey),
    ],
)
def test_create__invalid_setting__rejected_and_nothing_written(fields, error):
    make("existing", "int", b"1")
    before = state()

    with pytest.raises(error):
        Setting.objects.create(**fields)

    assert state() == before


@pytest.mark.parametrize(
    ("key", "value"),
    [("count", b"1.5"), ("flag", b"maybe"), ("doc", b'{"n": "x"}'), ("doc", b"{broken")],
)
def test_save__invalid_new_value__rejected_and_nothing_changes(key, value):
    make("count", "int", b"1")
    make("flag", "bool", b"false")
    make("doc", "json", b'{"n": 1}', json_schema={"properties": {"n": {"type": "integer"}}})
    before = state()

    with pytest.raises(InvalidValue):
        set_value(key, value)

    assert state() == before


def test_set_python_value__valid_and_invalid__stores_wire_form_or_raises():
    setting = Setting(key="a", value_type="float")

    setting.set_python_value(2)
    assert bytes(setting.value) == b"2.0"
    with pytest.raises(InvalidValue):
        setting.set_python_value("2")
    assert bytes(setting.value) == b"2.0"


def test_python_value__each_type__typed_value():
    values = {
        key: make(key, kind, raw).python_value
        for key, kind, raw in [
            ("i", "int", b"-3"),
            ("f", "float", b"0.25"),
            ("b", "bool", b"true"),
            ("s", "string", "é".encode()),
            ("j", "json", b'{"a":[1]}'),
            ("y", "bytes", b"\x00"),
        ]
    }

    assert values == {"i": -3, "f": 0.25, "b": True, "s": "é", "j": {"a": [1]}, "y": b"\x00"}


# Transactions


def test_save__rolled_back_transaction__no_revision_and_no_history():
    make("a", "int", b"1")
    before = state()

    with pytest.raises(RuntimeError), transaction.atomic():
        set_value("a", b"2")
        make("b", "int", b"3")
        raise RuntimeError("roll back")

    assert state() == before
    # The revision taken inside the rolled-back transaction is free again.
    assert set_value("a", b"2").revision == 2


# Publishing


@pytest.fixture
async def change_channel() -> AsyncIterator[tuple[Any, str]]:
    """A channel joined to the change group, with the publisher sending from this test's loop.

    The in-memory layer delivers only within one event loop, which is why the
    hub binds the publisher to its loop; this does the same for the test.
    """
    layer = get_channel_layer()
    channel = await layer.new_channel(prefix="test-models.")
    await layer.group_add(GROUP, channel)
    publisher.bind(asyncio.get_running_loop())
    try:
        yield layer, channel
    finally:
        await publisher.detach()
        await layer.group_discard(GROUP, channel)


async def receive(layer: Any, channel: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message on ``channel``; TimeoutError if none comes."""
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def assert_nothing_else_published(layer: Any, channel: str) -> None:
    """Commit a change of another key and see it arrive next: messages go out in commit order, so anything
    published before it (a rolled-back or an unchanged save) would have arrived first."""
    await sync_to_async(make)("sentinel", "int", b"0")
    message = await receive(layer, channel)
    assert message["key"] == "sentinel", f"unexpected publish: {message}"


async def test_save__committed__change_published_after_commit(change_channel):
    layer, channel = change_channel

    setting = await sync_to_async(make)("a", "int", b"5")
    message = await receive(layer, channel)

    assert message["type"] == "datastream.change"
    assert (message["key"], message["value"], message["value_type"]) == ("a", b"5", "int")
    assert (message["revision"], message["deleted"]) == (setting.revision, False)


async def test_save__rolled_back__publishes_nothing_while_a_committed_save_arrives(change_channel):
    layer, channel = change_channel
    await sync_to_async(make)("a", "int", b"1")
    assert (await receive(layer, channel))["value"] == b"1"

    def roll_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            set_value("a", b"666")
            raise RuntimeError("roll back")

    await sync_to_async(roll_back)()
    await sync_to_async(set_value)("a", b"2")

    # Messages go out in commit order, so a published rollback would come first.
    message = await receive(layer, channel)
    assert (message["key"], message["value"], message["revision"]) == ("a", b"2", 2)
    await assert_nothing_else_published(layer, channel)


async def test_save__savepoint_rolled_back_inside_committed_transaction__only_the_kept_change_published(
    change_channel,
):
    layer, channel = change_channel

    def outer() -> None:
        with transaction.atomic():
            make("kept", "int", b"1")
            with pytest.raises(RuntimeError), transaction.atomic():
                make("dropped", "int", b"2")
                raise RuntimeError("roll back the savepoint")

    await sync_to_async(outer)()

    message = await receive(layer, channel)
    assert (message["key"], message["revision"]) == ("kept", 1)
    await assert_nothing_else_published(layer, channel)
    assert not await Setting.objects.filter(key="dropped").aexists()


async def test_save__same_value__publishes_nothing(change_channel):
    layer, channel = change_channel
    await sync_to_async(make)("a", "int", b"1")
    await receive(layer, channel)

    await sync_to_async(set_value)("a", b"1")

    await assert_nothing_else_published(layer, channel)


async def test_delete__committed__deletion_published_with_its_revision(change_channel):
    layer, channel = change_channel
    setting = await sync_to_async(make)("a", "int", b"1")
    await receive(layer, channel)

    await sync_to_async(setting.delete)()
    message = await receive(layer, channel)

    assert (message["key"], message["deleted"], message["revision"]) == ("a", True, 2)


# One write path


def test_save__instance_read_before_another_change__history_chain_holds_and_revision_rises():
    make("a", "int", b"1")
    stale = Setting.objects.get(key="a")
    set_value("a", b"2")

    stale.value = b"3"
    stale.save()

    rows = list(SettingChange.objects.filter(key="a").order_by("revision"))
    assert [(r.old_value and bytes(r.old_value), bytes(r.new_value), r.revision) for r in rows] == [
        (None, b"1", 1),
        (b"1", b"2", 2),
        (b"2", b"3", 3),
    ]
    assert Setting.objects.get(key="a").revision == 3


def test_save__stale_instance_changing_only_the_description__keeps_the_newer_revision():
    make("a", "int", b"1")
    stale = Setting.objects.get(key="a")
    fresh = set_value("a", b"2")
    stale.value = fresh.value  # the same value, as a form re-posting what it shows

    stale.description = "edited"
    stale.save()

    saved = Setting.objects.get(key="a")
    assert (saved.description, saved.revision, Revision.current()) == ("edited", 2, 2)
    assert SettingChange.objects.filter(key="a").count() == 2


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("update", lambda qs: qs.update(value=b"99")),
        ("bulk_update", lambda qs: Setting.objects.bulk_update(list(qs), ["value"])),
        ("bulk_create", lambda qs: Setting.objects.bulk_create([Setting(key="b", value_type="int", value=b"1")])),
    ],
)
def test_queryset_bulk_write__refused_naming_the_method__nothing_changes(method, call):
    make("a", "int", b"1")
    before = state()

    with pytest.raises(NotSupportedError, match=rf"Setting\.objects\.{method}\(\) is not supported"):
        call(Setting.objects.filter(key="a"))

    assert state() == before


def test_queryset_delete__each_row_takes_a_revision_and_a_delete_row():
    make("a", "int", b"1")
    make("b", "int", b"2")

    count, _ = Setting.objects.filter(key__in=["a", "b"]).delete()

    assert count == 2
    deletes = SettingChange.objects.filter(action=SettingChange.DELETE).order_by("revision")
    assert [(row.key, row.revision) for row in deletes] == [("a", 3), ("b", 4)]
    assert not Setting.objects.exists()


def test_save__secret_flag_turned_on_then_off__each_takes_a_revision_and_a_history_row():
    setting = make("a", "int", b"1")

    setting.secret = True
    setting.save()
    setting.secret = False
    setting.save()

    rows = list(SettingChange.objects.filter(key="a").order_by("revision"))
    assert [(row.revision, row.secret, bytes(row.new_value)) for row in rows] == [
        (1, False, b"1"),
        (2, True, b"1"),
        (3, False, b"1"),
    ]
    assert Setting.objects.get(key="a").revision == 3
