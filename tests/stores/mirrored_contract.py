"""The contract every external store (a MirroredStore) keeps besides the common one: test modules of git, S3, SQL and
memory import these tests next to ``contract``'s."""

from __future__ import annotations

from typing import Any

import pytest

from datastream_app.models import SettingChange
from datastream_app.stores.mirrored import MirroredStore, Snapshot
from tests.stores.contract import a_key, wire


def test_mirrored_refresh__listing_taken_before_a_write_through_the_store__does_not_undo_it(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: MirroredStore = harness.store
    key = a_key(harness)
    sample = harness.samples[key]
    revision = store.current_revision()
    list_source = store.fetch

    def list_then_someone_writes() -> dict[str, Snapshot]:
        # The listing is taken; a PushUpdate in another thread lands before the watcher applies it.
        listing = list_source()
        store.put(key, value_type=sample.value_type, decode=wire(sample.other))
        return listing

    monkeypatch.setattr(store, "fetch", list_then_someone_writes)
    store.refresh()
    monkeypatch.undo()
    after_stale_listing = store.get_many([key])[key].value
    store.refresh()

    assert after_stale_listing == sample.other
    assert store.get_many([key])[key].value == sample.other
    changes = SettingChange.objects.filter(key=key, revision__gt=revision)
    assert [bytes(c.new_value) for c in changes.order_by("revision")] == [sample.other]
