"""Entries as wire messages: ``Data`` and pre-serialised ``DataResponse`` frames.

Serialised DataResponse messages concatenate into one valid DataResponse (map
entries are repeated fields), so coalesced updates are joined bytes and a
change fanned out to many streams is serialised once.
"""

from __future__ import annotations

from datastream_app.changes import Entry
from protos import datastream_pb2


def to_proto(entry: Entry) -> datastream_pb2.Data:
    """The wire ``Data`` message for ``entry`` (a deletion: a tombstone, ``deleted`` set and no value)."""
    data = datastream_pb2.Data(
        key=entry.key,
        value=b"" if entry.deleted else entry.value,
        value_type=entry.value_type,
        revision=entry.revision,
        deleted=entry.deleted,
    )
    data.updated_at.FromDatetime(entry.updated_at)
    return data


def entry_frame(entry: Entry) -> bytes:
    """A serialised ``DataResponse`` holding only ``entry`` (the hub's frame builder)."""
    response = datastream_pb2.DataResponse()
    response.data[entry.key].CopyFrom(to_proto(entry))
    return response.SerializeToString()


def response_frame(entries: dict[str, Entry]) -> bytes:
    """A serialised ``DataResponse`` holding all ``entries``."""
    return b"".join(entry_frame(entry) for entry in entries.values())


def resumed_frame(since_revision: int) -> bytes:
    """The ``DataResponse.resumed_from`` marker, appended to a first message that holds only changes after it."""
    return datastream_pb2.DataResponse(resumed_from=since_revision).SerializeToString()
