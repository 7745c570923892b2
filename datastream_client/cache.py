"""The last-known-good cache file: what a client held, to start from when the server is unreachable.

A JSON document, written atomically (a temporary file in the same directory,
fsync, ``os.replace``, fsync of the directory), so a reader sees the previous
file or the next one, never a part::

    {"format": "datastream-client-cache", "version": 1,
     "target": "127.0.0.1:50051", "keys": ["max_connections"] or null,
     "revision": 12, "written_at": 1767225600.0,
     "entries": {"max_connections": {"value_type": "int", "value": "MTA=", "revision": 12}}}

``value`` is the wire form in base64. A file that is not this document, or
was written for another target or key list, is ignored with a warning.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datastream_client import codec
from datastream_client.errors import InvalidValue

logger = logging.getLogger("datastream_client")

FORMAT = "datastream-client-cache"
VERSION = 1


@dataclass(frozen=True, slots=True)
class CachedEntry:
    """One key as the cache file holds it: its type, wire bytes and revision."""

    value_type: str
    wire: bytes
    revision: int


def _key_list(keys: Sequence[str] | None) -> list[str] | None:
    return None if keys is None else sorted(set(keys))


def load(path: str | os.PathLike[str], *, target: str, keys: Sequence[str] | None) -> dict[str, CachedEntry] | None:
    """The entries of the cache at ``path``, or None (missing, corrupt, foreign: a warning says which)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cache file %s ignored: cannot read it (%s)", path, exc)
        return None
    try:
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a datastream client cache")
        if document.get("version") != VERSION:
            raise ValueError(f"cache format version {document.get('version')!r}, expected {VERSION}")
        if document.get("target") != target:
            raise ValueError(f"written for target {document.get('target')!r}, not {target!r}")
        if document.get("keys") != _key_list(keys):
            raise ValueError("written for another list of keys")
        entries: dict[str, CachedEntry] = {}
        for key, item in document["entries"].items():
            kind = codec.parse_value_type(item["value_type"])
            wire = base64.b64decode(item["value"], validate=True)
            codec.decode_wire(kind, wire)  # a value that does not decode makes the whole file suspect
            revision = item["revision"]
            if not isinstance(key, str) or not isinstance(revision, int) or revision < 0:
                raise ValueError(f"malformed entry {key!r}")
            entries[key] = CachedEntry(kind.value, wire, revision)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, InvalidValue) as exc:
        logger.warning("cache file %s ignored: %s", path, exc)
        return None
    return entries


def write(
    path: str | os.PathLike[str], *, target: str, keys: Sequence[str] | None, entries: Mapping[str, CachedEntry]
) -> None:
    """Replace the cache at ``path`` atomically with ``entries`` (mode 0600)."""
    destination = Path(path)
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "target": target,
        "keys": _key_list(keys),
        "revision": max((e.revision for e in entries.values()), default=0),
        "written_at": time.time(),
        "entries": {
            key: {
                "value_type": e.value_type,
                "value": base64.b64encode(e.wire).decode("ascii"),
                "revision": e.revision,
            }
            for key, e in sorted(entries.items())
        },
    }
    data = json.dumps(document, separators=(",", ":")).encode("utf-8")
    directory = destination.parent
    directory.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600: cached values are readable by this user only.
    fd, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename itself survives a power cut only once the directory is synced.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
