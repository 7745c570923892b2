"""The contract against the S3 bucket store, on a real S3-compatible server (moto's), plus what is S3's own.

Every test gets a bucket of its own on one server per module; the tests that
stop and restart the server start one of their own.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from botocore.exceptions import ClientError
from django.test import override_settings

from datastream_app import services
from datastream_app.exceptions import Aborted, Unavailable
from datastream_app.models import MirroredEntry, Setting, SettingChange, StoreStatus
from datastream_app.stores import get_stores
from datastream_app.stores.s3 import VALUE_TYPE_METADATA, S3Store, infer_value_type
from tests.conftest import serving
from tests.s3server import S3Server
from tests.stores.contract import *  # noqa: F403 - the contract's tests run here
from tests.stores.contract import Harness, Sample, wire
from tests.stores.mirrored_contract import *  # noqa: F403 - and the external stores' contract

pytestmark = pytest.mark.django_db(transaction=True)

ALIAS = "bucket"
PREFIX = "bucket/"
BACKEND = "datastream_app.stores.s3.S3Store"
MODEL_STORE = {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""}

SAMPLES = {
    "bucket/flags.json": Sample("json", b'{"a":1}', b'{"a":2}', b"{"),
    "bucket/motd.txt": Sample("string", b"hello", b"bye"),
    "bucket/blob.bin": Sample("bytes", b"\x00\x01", b"\x02"),
    # No extension would make it a string: the metadata says int.
    "bucket/max_connections": Sample("int", b"10", b"25", b"ten"),
}


def new_bucket() -> str:
    """A bucket name no other test uses."""
    return f"ds-{uuid.uuid4().hex[:16]}"


def put(client: Any, bucket: str, object_key: str, value_type: str, value: bytes) -> str:
    """Write an object as another program would, with the value-type metadata only where the name does not tell."""
    metadata = {VALUE_TYPE_METADATA: value_type} if infer_value_type(object_key, value) != value_type else {}
    return str(client.put_object(Bucket=bucket, Key=object_key, Body=value, Metadata=metadata)["ETag"])


def config(server: S3Server, bucket: str, **options: Any) -> dict[str, Any]:
    """The DATASTREAM["STORES"] entry of a bucket store on ``server``."""
    return {
        "BACKEND": BACKEND,
        "PREFIX": PREFIX,
        "OPTIONS": {**server.options(bucket), "poll_interval": 0.2, **options},
    }


def make_store(server: S3Server, bucket: str, *, alias: str = ALIAS, **options: Any) -> S3Store:
    """An S3Store built as the settings would build it."""
    entry = config(server, bucket, **options)
    return S3Store(alias=alias, prefix=entry["PREFIX"], **entry["OPTIONS"])


def seed(server: S3Server, bucket: str) -> Any:
    """Create ``bucket`` with the samples; return the outside client."""
    client = server.client()
    client.create_bucket(Bucket=bucket)
    for key, sample in SAMPLES.items():
        put(client, bucket, key.removeprefix(PREFIX), sample.value_type, sample.initial)
    return client


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """One moto server for the module."""
    with S3Server() as server:
        yield server


@pytest.fixture
def own_server() -> Iterator[S3Server]:
    """A moto server for one test, which may stop and restart it."""
    with S3Server() as server:
        yield server


@pytest.fixture
def harness(s3: S3Server) -> Iterator[Harness]:
    bucket = new_bucket()
    client = seed(s3, bucket)
    store = make_store(s3, bucket)
    store.refresh()

    def outside_write(key: str, value_type: str, value: bytes) -> None:
        put(client, bucket, store.object_key_of(key), value_type, value)

    yield Harness(
        store=store, samples=SAMPLES, outside_write=outside_write, config=config(s3, bucket), notice=store.refresh
    )
    store.close()


# Value types


def test_s3_infer_value_type__names_bytes_and_metadata__like_files_unless_declared():
    assert infer_value_type("a/flags.json", b"{") == "json"
    assert infer_value_type("a/notes.txt", "héllo".encode()) == "string"
    assert infer_value_type("a/notes.TXT", b"x") == "string"
    assert infer_value_type("a/motd", b"hello") == "string"
    assert infer_value_type("a/.env", b"A=1") == "string"
    assert infer_value_type("a/motd", b"\xff\xfe") == "bytes"
    assert infer_value_type("a/notes.txt", b"\xff") == "bytes"
    assert infer_value_type("a/logo.png", b"hello") == "bytes"
    assert infer_value_type("a/max", b"10", "int") == "int"
    assert infer_value_type("a/flags.json", b"true", " BOOL ") == "bool"


def test_s3_refresh__objects_of_every_kind__typed_and_invalid_ones_skipped(s3):
    bucket = new_bucket()
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="plain", Body=b"text")
    client.put_object(Bucket=bucket, Key="raw", Body=b"\xff\x00")
    client.put_object(Bucket=bucket, Key="ratio", Body=b"0.5", Metadata={"value-type": "float"})
    client.put_object(Bucket=bucket, Key="broken.json", Body=b"{")
    client.put_object(Bucket=bucket, Key="weird", Body=b"1", Metadata={"value-type": "decimal"})
    client.put_object(Bucket=bucket, Key="has space", Body=b"1")
    client.put_object(Bucket=bucket, Key="folder/", Body=b"")
    store = make_store(s3, bucket)

    store.refresh()

    assert [(c.key, c.value_type) for c in store.capabilities()] == [
        ("bucket/plain", "string"),
        ("bucket/ratio", "float"),
        ("bucket/raw", "bytes"),
    ]


# Change detection


def test_s3_refresh__new_object__becomes_a_key(harness):
    store = harness.store
    client = store.client()
    revision = store.current_revision()

    put(client, store.bucket, "new.json", "json", b'{"new": true}')
    changed = store.refresh()

    assert changed == 1
    assert store.get_many(["bucket/new.json"])["bucket/new.json"].value == b'{"new":true}'
    assert list(store.changed_since(revision)) == ["bucket/new.json"]
    assert SettingChange.objects.get(key="bucket/new.json").action == SettingChange.CREATE


def test_s3_refresh__object_deleted__key_gone_with_a_delete_record(harness):
    store = harness.store

    store.client().delete_object(Bucket=store.bucket, Key="motd.txt")
    changed = store.refresh()

    assert changed == 1
    assert "bucket/motd.txt" not in store.get_many(None)
    assert SettingChange.objects.filter(key="bucket/motd.txt", action=SettingChange.DELETE, store=ALIAS).exists()


def test_s3_refresh__one_object_changed__only_that_one_downloaded(harness):
    store = harness.store
    assert store.last_downloads == len(SAMPLES)

    store.refresh()
    assert store.last_downloads == 0

    harness.outside_write("bucket/motd.txt", "string", b"changed")
    store.refresh()
    assert store.last_downloads == 1
    assert store.get_many(["bucket/motd.txt"])["bucket/motd.txt"].value == b"changed"


def test_s3_refresh__new_process__unchanged_objects_taken_from_the_copy_without_download(harness):
    harness.outside_write("bucket/motd.txt", "string", b"changed")
    store = harness.store
    restarted = S3Store(alias=ALIAS, prefix=PREFIX, **harness.config["OPTIONS"])

    changed = restarted.refresh()

    assert restarted.last_downloads == 1
    assert changed == 1
    assert restarted.get_many(None) == store.get_many(None)
    restarted.close()


def test_s3_refresh__more_than_1000_objects__every_object_listed_across_pages(s3):
    bucket = new_bucket()
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    names = [f"many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: client.put_object(Bucket=bucket, Key=name, Body=name.encode()), names))
    first_page = client.list_objects_v2(Bucket=bucket)
    # The server pages like S3 does, so one request cannot see them all.
    assert (first_page["KeyCount"], first_page["IsTruncated"]) == (1000, True)
    store = make_store(s3, bucket)
    small_pages = make_store(s3, bucket, alias="bucket-pages", page_size=300)

    changed = store.refresh()

    assert changed == 1100
    assert [c.key for c in store.capabilities()] == [PREFIX + name for name in names]
    assert store.get_many([PREFIX + "many/01099"])[PREFIX + "many/01099"].value == b"many/01099"
    assert sorted(item.object_key for item in small_pages.list_objects()) == names


def test_s3_object_prefix__objects_inside_and_outside__only_those_under_it_with_the_prefix_removed(s3):
    bucket = new_bucket()
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    put(client, bucket, "prod/service/limit", "int", b"5")
    put(client, bucket, "prod/motd.txt", "string", b"hi")
    put(client, bucket, "staging/motd.txt", "string", b"other")
    put(client, bucket, "production.txt", "string", b"not under prod/")
    store = make_store(s3, bucket, object_prefix="prod/")

    store.refresh()
    store.put("bucket/motd.txt", value_type="string", decode=wire(b"written"))

    assert {k: e.value for k, e in store.get_many(None).items()} == {
        "bucket/motd.txt": b"written",
        "bucket/service/limit": b"5",
    }
    assert client.get_object(Bucket=bucket, Key="prod/motd.txt")["Body"].read() == b"written"
    assert client.get_object(Bucket=bucket, Key="staging/motd.txt")["Body"].read() == b"other"


def test_s3_refresh__object_larger_than_the_limit__not_downloaded_and_last_value_kept(s3):
    bucket = new_bucket()
    client = seed(s3, bucket)
    store = make_store(s3, bucket, max_object_size=16)
    store.refresh()

    put(client, bucket, "motd.txt", "string", b"x" * 17)
    put(client, bucket, "big.txt", "string", b"y" * 17)
    store.refresh()

    assert store.last_downloads == 0
    assert store.get_many(["bucket/motd.txt"])["bucket/motd.txt"].value == b"hello"
    assert "bucket/big.txt" not in store.get_many(None)


# Writes


def test_s3_server__stale_if_match__refused_with_412():
    # Not a store test: it records that the test server enforces If-Match, so
    # the race tests below prove the conditional put, not a HEAD check.
    with S3Server() as server:
        client = server.client()
        client.create_bucket(Bucket="ds-if-match")
        client.put_object(Bucket="ds-if-match", Key="k", Body=b"1")

        with pytest.raises(ClientError) as caught:
            client.put_object(Bucket="ds-if-match", Key="k", Body=b"2", IfMatch='"0123456789abcdef0123456789abcdef"')

        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        assert client.get_object(Bucket="ds-if-match", Key="k")["Body"].read() == b"1"


def test_s3_put__object_changed_since_last_listing__aborted_and_nothing_changed(harness):
    store = harness.store
    store.get_many(["bucket/motd.txt"])  # the copy holds "hello" and its ETag
    harness.outside_write("bucket/motd.txt", "string", b"changed elsewhere")
    revision = store.current_revision()
    history = SettingChange.objects.count()

    with pytest.raises(Aborted, match="changed"):
        store.put("bucket/motd.txt", value_type="string", decode=wire(b"mine"))

    assert store.client().get_object(Bucket=store.bucket, Key="motd.txt")["Body"].read() == b"changed elsewhere"
    assert store.get_many(["bucket/motd.txt"])["bucket/motd.txt"].value == b"hello"
    assert (store.current_revision(), SettingChange.objects.count()) == (revision, history)


def test_s3_put__object_deleted_since_last_listing__aborted_and_not_recreated(harness):
    store = harness.store
    store.client().delete_object(Bucket=store.bucket, Key="motd.txt")

    with pytest.raises(Aborted):
        store.put("bucket/motd.txt", value_type="string", decode=wire(b"mine"))

    with pytest.raises(ClientError):
        store.client().head_object(Bucket=store.bucket, Key="motd.txt")


def test_s3_put__if_match_off__head_check_refuses_a_stale_etag(s3):
    bucket = new_bucket()
    client = seed(s3, bucket)
    store = make_store(s3, bucket, if_match=False)
    store.refresh()
    put(client, bucket, "motd.txt", "string", b"changed elsewhere")

    with pytest.raises(Aborted):
        store.put("bucket/motd.txt", value_type="string", decode=wire(b"mine"))
    store.refresh()
    entry = store.put("bucket/motd.txt", value_type="string", decode=wire(b"mine"))

    assert entry.value == b"mine"
    assert client.get_object(Bucket=bucket, Key="motd.txt")["Body"].read() == b"mine"


def test_s3_put__typed_by_metadata__metadata_and_type_kept(harness):
    store = harness.store

    store.put("bucket/max_connections", value_type="int", decode=wire(b"42"))
    head = store.client().head_object(Bucket=store.bucket, Key="max_connections")
    restarted = S3Store(alias="bucket-again", prefix="again/", **harness.config["OPTIONS"])
    restarted.refresh()

    assert head["Metadata"] == {VALUE_TYPE_METADATA: "int"}
    assert restarted.get_many(["again/max_connections"])["again/max_connections"].value_type == "int"


def test_s3_put__bytes_that_read_as_text__type_pinned_by_metadata(s3):
    bucket = new_bucket()
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="raw", Body=b"\xff")
    store = make_store(s3, bucket)
    store.refresh()

    store.put("bucket/raw", value_type="bytes", decode=wire(b"plain ascii"))
    store.refresh()

    assert store.get_many(["bucket/raw"])["bucket/raw"].value_type == "bytes"
    assert client.head_object(Bucket=bucket, Key="raw")["Metadata"] == {VALUE_TYPE_METADATA: "bytes"}


def test_s3_put__fresh_store_instance__writes_after_a_head_and_later_refresh_is_quiet(harness):
    # A web process's store never lists the bucket; it writes with the ETag of the copy.
    fresh = S3Store(alias=ALIAS, prefix=PREFIX, **harness.config["OPTIONS"])

    entry = fresh.put("bucket/flags.json", value_type="json", decode=wire(b'{"b": 2}'))

    assert entry.value == b'{"b":2}'
    assert harness.store.refresh() == 0
    assert harness.store.get_many(["bucket/flags.json"])["bucket/flags.json"].revision == entry.revision
    fresh.close()


# Failure isolation


def test_s3_refresh__server_stopped__only_its_keys_unavailable_until_it_is_back(own_server):
    bucket = new_bucket()
    seed(own_server, bucket)
    Setting.objects.create(key="max_connections", value_type="int", value=b"10")
    stores = {"default": MODEL_STORE, ALIAS: config(own_server, bucket)}

    with override_settings(DATASTREAM={"STORES": stores}):
        store = next(s for s in get_stores() if s.alias == ALIAS)
        assert isinstance(store, S3Store)
        store.refresh()
        assert services.get_entries(keys=["bucket/motd.txt"])["bucket/motd.txt"].value == b"hello"

        own_server.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable, match="bucket"):
            store.refresh()
        assert time.monotonic() - started < 5
        with pytest.raises(Unavailable, match="bucket"):
            services.get_entries(keys=["bucket/motd.txt"])
        with pytest.raises(Unavailable, match="bucket"):
            store.put("bucket/motd.txt", value_type="string", decode=wire(b"while down"))
        assert services.get_entries(keys=["max_connections"])["max_connections"].value == b"10"

        # Back on the same port, without its state: the bucket is made again with other content.
        own_server.start()
        with pytest.raises(Unavailable, match="bucket"):
            store.refresh()  # the bucket does not exist yet
        client = own_server.client()
        client.create_bucket(Bucket=bucket)
        put(client, bucket, "motd.txt", "string", b"while away")
        revision = store.current_revision()
        store.refresh()

        assert services.get_entries(keys=["bucket/motd.txt"])["bucket/motd.txt"].value == b"while away"
        assert sorted(store.changed_since(revision)) == ["bucket/motd.txt"]
        assert set(store.get_many(None)) == {"bucket/motd.txt"}
        assert SettingChange.objects.filter(key="bucket/flags.json", action=SettingChange.DELETE).exists()


def test_s3_refresh__server_never_answers__unavailable_within_the_timeouts():
    # A listening socket that never accepts: the connection succeeds, the answer never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        options = {
            "endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "access_key": "x",
            "secret_key": "y",
            "bucket": "silent",
            "read_timeout": 0.5,
        }
        store = S3Store(alias=ALIAS, prefix=PREFIX, **options)
        started = time.monotonic()

        with pytest.raises(Unavailable, match="bucket"):
            store.refresh()

        assert time.monotonic() - started < 5
        assert not StoreStatus.objects.get(alias=ALIAS).ok
        store.close()


async def test_s3_watch__server_restarted_with_new_content__subscriber_gets_the_changes(own_server):
    from protos import datastream_pb2

    bucket = new_bucket()
    await sync_to_async(seed, thread_sensitive=False)(own_server, bucket)
    stores = {"default": MODEL_STORE, ALIAS: config(own_server, bucket)}
    key = "bucket/motd.txt"

    async def status_ok() -> bool | None:
        status = await StoreStatus.objects.filter(alias=ALIAS).afirst()
        return None if status is None else status.ok

    async def until(predicate: Any) -> None:
        deadline = time.monotonic() + 10
        while not await predicate():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    async with serving(DATASTREAM={"STORES": stores}) as (service, stub):
        await until(lambda: MirroredEntry.objects.filter(key=key).aexists())
        call = stub.Subscribe(datastream_pb2.DataRequest(keys=[key]))
        first = await asyncio.wait_for(call.read(), 10)

        await asyncio.to_thread(own_server.stop)
        service.watchers.wake(ALIAS)

        async def down() -> bool:
            return await status_ok() is False

        await until(down)
        with pytest.raises(Unavailable, match="bucket"):
            await sync_to_async(services.get_entries, thread_sensitive=False)(keys=[key])

        await asyncio.to_thread(own_server.start)
        client = own_server.client()
        await asyncio.to_thread(client.create_bucket, Bucket=bucket)
        await asyncio.to_thread(put, client, bucket, "motd.txt", "string", b"while away")
        service.watchers.wake(ALIAS)
        after = await asyncio.wait_for(call.read(), 10)
        call.cancel()

    assert first.data[key].value == b"hello"
    assert after.data[key].value == b"while away"
