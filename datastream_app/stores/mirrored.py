"""Base of the external stores (git, S3, SQL tables): the source of truth lives outside Django.

A backend only lists its keys (``fetch``) and writes one (``write``). This base
keeps a copy of every key in the MirroredEntry table: a watcher compares each
listing with the copy and applies every difference in its own transaction,
taking a global revision and a history row, then publishing the change after
commit exactly like a setting saved in the admin. Reads are served from the
copy, so they are as fast and as consistent as the model store's, and fail with
UNAVAILABLE when the source could not be read recently.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q
from django.utils import timezone

from datastream_app import codec
from datastream_app.audit import Interface, acting
from datastream_app.changes import Entry
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import (
    Aborted,
    DatastreamError,
    InvalidKey,
    InvalidValue,
    NotFound,
    TypeMismatch,
    Unavailable,
)
from datastream_app.models import MirroredEntry, Revision, StoreStatus
from datastream_app.recording import KEEP, Keep, entry_of, record_change
from datastream_app.stores.base import Capability, Decoder, Store

logger = logging.getLogger(__name__)

# Who holds a store's watcher lease: unique per process on this host.
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One key as the source holds it: type, wire bytes and the source's version marker."""

    value_type: str
    value: bytes
    etag: str


class Superseded(Exception):
    """The copy of a key changed after a listing began, so that listing may be older than the copy."""


class MirroredStore(Store):
    """A store whose keys are copied from an outside source by a watcher.

    OPTIONS common to every external store: ``poll_interval`` (seconds between
    listings, default 5), ``stale_after`` (seconds without a successful listing,
    by whichever process, before its keys fail with UNAVAILABLE, default
    max(3 * poll_interval, 15)), ``lease_seconds`` (how long a watcher's lease
    lasts unrenewed, default stale_after / 2: shorter than stale_after, so a
    process taking over from one that vanished lists before readers see staleness),
    ``webhook_secret`` (enables ``POST /api/v1/stores/<alias>/refresh`` for callers bearing it).
    """

    def __init__(
        self,
        *,
        alias: str,
        prefix: str = "",
        poll_interval: float = 5.0,
        stale_after: float | None = None,
        lease_seconds: float | None = None,
        webhook_secret: str = "",
        **options: Any,
    ) -> None:
        super().__init__(alias=alias, prefix=prefix, **options)
        # Checked by the webhook endpoint (api/webhooks.py): a POST bearing it asks for a refresh now.
        self.webhook_secret = str(webhook_secret)
        self.poll_interval = float(poll_interval)
        self.stale_after = float(stale_after) if stale_after is not None else max(3 * self.poll_interval, 15.0)
        self.lease_seconds = float(lease_seconds) if lease_seconds is not None else self.stale_after / 2
        if not 0 < self.lease_seconds < self.stale_after:
            raise ImproperlyConfigured(
                f"store {alias!r}: lease_seconds ({self.lease_seconds:g}) must be positive and shorter than "
                f"stale_after ({self.stale_after:g})"
            )
        self._rejected: set[tuple[str, str]] = set()

    # Backend hooks

    @abstractmethod
    def fetch(self) -> dict[str, Snapshot]:
        """Every key the source holds now (full keys, with the prefix); raise on any failure to read."""

    @abstractmethod
    def write(self, key: str, value: bytes, value_type: str, expected_etag: str) -> Snapshot:
        """Write one key to the source if it still holds ``expected_etag``.

        Raise Aborted if the source moved on (nothing written), Unavailable if it
        cannot be reached. Return the key as the source now holds it.
        """

    def wait(self, timeout: float) -> None:
        """Block until the source may have changed or ``timeout`` passes (backends with notifications override)."""
        time.sleep(timeout)

    def close(self) -> None:
        """Release connections and files (called when the watcher stops)."""

    # Watching

    def refresh(self) -> int:
        """List the source and apply every difference to the copy; return how many keys changed.

        A failure to read marks the store unavailable and raises Unavailable.
        """
        changed = 0
        # A listing that raced a write through the store skips that key (see
        # apply's ``listed_at``); list again so a later outside change to it is
        # not left waiting for the next poll. Bounded: writes may never stop.
        for _ in range(3):
            count, superseded = self._refresh_once()
            changed += count
            if not superseded:
                break
        return changed

    def _refresh_once(self) -> tuple[int, bool]:
        listed_at = Revision.current()
        try:
            listing = self.fetch()
        except Exception as exc:
            message = f"store {self.alias!r} unavailable: {exc}"
            self._set_status(ok=False, error=message)
            raise Unavailable(message) from exc
        valid = {key: snap for key, snap in listing.items() if self._acceptable(key, snap)}
        current = {
            row["key"]: row["etag"] for row in MirroredEntry.objects.filter(store=self.alias).values("key", "etag")
        }
        differing: dict[str, Snapshot | None] = {k: s for k, s in valid.items() if current.get(k) != s.etag}
        # Present but invalid now: keep serving the last valid value.
        differing.update(dict.fromkeys(current.keys() - listing.keys()))
        changed, superseded = 0, False
        with acting(self.alias, Interface.STORE):
            for key, snap in differing.items():
                try:
                    if self.apply(key, snap, listed_at=listed_at) is not None:
                        changed += 1
                except Superseded:
                    superseded = True
        self._set_status(ok=True, error="")
        return changed, superseded

    def _acceptable(self, key: str, snap: Snapshot) -> bool:
        if (key, snap.etag) in self._rejected:
            return False
        ok = self._check(key, snap)
        if not ok:
            # Warn once per version, not at every poll.
            self._rejected.add((key, snap.etag))
        return ok

    def _check(self, key: str, snap: Snapshot) -> bool:
        limit = datastream_settings.MAX_VALUE_BYTES
        if len(snap.value) > limit:
            logger.warning(
                "store %s: %s skipped: %d bytes, over the %d-byte value limit", self.alias, key, len(snap.value), limit
            )
            return False
        try:
            codec.validate_key(key)
            kind = codec.parse_value_type(snap.value_type)
            codec.decode_wire(kind, snap.value)
        except InvalidValue as exc:
            logger.warning("store %s: %s skipped: %s", self.alias, key, exc.message)
            return False
        except InvalidKey as exc:
            logger.warning("store %s: key %r skipped: %s", self.alias, key, exc.message)
            return False
        if not self.owns(key):
            logger.warning("store %s: key %r is outside its prefix %r; skipped", self.alias, key, self.prefix)
            return False
        return True

    def apply(self, key: str, snap: Snapshot | None, *, listed_at: int | None = None) -> Entry | None:
        """Bring one key of the copy in line with ``snap`` (None: deleted); None if it already was.

        ``listed_at`` is the revision when the listing holding ``snap`` began: a
        row changed after it was written through the store meanwhile, and the
        listing may predate that write, so Superseded is raised and nothing changes.
        """

        def change(row: MirroredEntry | None) -> MirroredEntry | Keep | None:
            if row is not None and row.store != self.alias:
                logger.warning("store %s: key %r already served by store %s; skipped", self.alias, key, row.store)
                return KEEP
            if row is not None and listed_at is not None and row.revision > listed_at:
                raise Superseded(key)
            if snap is None:
                return KEEP if row is None else None
            if row is not None and row.etag == snap.etag:
                return KEEP
            kind = codec.ValueType(snap.value_type)
            if row is None:
                row = MirroredEntry(store=self.alias, key=key)
            # Canonical bytes, as for settings: what subscribers see is always the canonical form.
            row.value = codec.encode_wire(kind, codec.decode_wire(kind, snap.value))
            row.value_type, row.etag = snap.value_type, snap.etag
            return row

        recorded = record_change(MirroredEntry, lookup={"key": key}, change=change, store=self.alias)
        return recorded.entry if recorded.changed else None

    # Lease and status

    def acquire_lease(self, holder: str = PROCESS_ID) -> bool:
        """Take or renew the watcher lease for this store; False if another live process holds it."""
        now = timezone.now()
        until = now + timedelta(seconds=self.lease_seconds)
        StoreStatus.objects.get_or_create(alias=self.alias)
        taken = StoreStatus.objects.filter(
            Q(leader=holder) | Q(leader="") | Q(lease_until__isnull=True) | Q(lease_until__lt=now), alias=self.alias
        ).update(leader=holder, lease_until=until)
        return taken == 1

    def release_lease(self, holder: str = PROCESS_ID) -> None:
        """Give the lease up so another process takes over at once."""
        StoreStatus.objects.filter(alias=self.alias, leader=holder).update(leader="", lease_until=None)

    def _set_status(self, *, ok: bool, error: str) -> None:
        StoreStatus.objects.update_or_create(
            alias=self.alias, defaults={"ok": ok, "error": error[:2000], "checked_at": timezone.now()}
        )

    def check_available(self) -> None:
        """Raise Unavailable unless the source was read successfully within ``stale_after`` seconds."""
        status = StoreStatus.objects.filter(alias=self.alias).first()
        if status is None or status.checked_at is None:
            raise Unavailable(f"store {self.alias!r} has not been read yet")
        if not status.ok:
            raise Unavailable(status.error or f"store {self.alias!r} unavailable")
        age = (timezone.now() - status.checked_at).total_seconds()
        if age > self.stale_after:
            raise Unavailable(f"store {self.alias!r} unavailable: not read for {age:.0f}s")

    # Store interface, served from the copy

    def _rows(self) -> Any:
        return MirroredEntry.objects.filter(store=self.alias)

    def capabilities(self) -> list[Capability]:
        """Every key of the source with its type."""
        self.check_available()
        return [
            Capability(key=k, value_type=t) for k, t in self._rows().order_by("key").values_list("key", "value_type")
        ]

    def get_many(self, keys: Sequence[str] | None) -> dict[str, Entry]:
        """Current values from the copy."""
        self.check_available()
        rows = self._rows() if keys is None else self._rows().filter(key__in=list(keys))
        return {row.key: entry_of(row) for row in rows.order_by("key")}

    def put(
        self,
        key: str,
        *,
        value_type: str,
        decode: Decoder,
        expected_revision: int | None = None,
        caller_reads_secrets: bool = True,
    ) -> Entry:
        """Write to the source first (conditional on the version we hold), then record the change.

        ``caller_reads_secrets`` does not apply: external stores hold no secret settings.
        """
        self.check_available()
        row = self._rows().filter(key=key).first()
        if row is None:
            raise NotFound(f"unknown key {key!r}", keys=[key])
        if value_type and value_type != row.value_type:
            raise TypeMismatch(f"key {key!r} has value_type {row.value_type!r}, not {value_type!r}")
        if expected_revision is not None and row.revision != expected_revision:
            raise Aborted(
                f"key {key!r} is at revision {row.revision}, not {expected_revision}; read it again and retry"
            )
        kind = codec.ValueType(row.value_type)
        value = decode(kind, None, False)
        if value == bytes(row.value):
            return entry_of(row)
        try:
            snap = self.write(key, value, row.value_type, row.etag)
        except Aborted:
            # Our copy is behind the source: have the watcher catch up now, so
            # a client that reads again and retries succeeds.
            from datastream_app.stores.watch import request_refresh

            request_refresh(self.alias)
            raise
        except DatastreamError:
            raise
        except Exception as exc:
            # Only this write failed: reads keep coming from the copy, and the
            # watcher's next listing decides whether the store is down.
            raise Unavailable(f"store {self.alias!r} could not write {key!r}: {exc}") from exc
        return self.apply(key, snap) or entry_of(self._rows().get(key=key))

    def changed_since(self, revision: int) -> dict[str, Entry]:
        """Keys of this store changed after ``revision``."""
        return {row.key: entry_of(row) for row in self._rows().filter(revision__gt=revision).order_by("revision")}

    def current_revision(self) -> int:
        """The global revision counter (shared with every store)."""
        return Revision.current()
