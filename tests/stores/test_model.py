"""The contract against the default store: settings in Django's database."""

from __future__ import annotations

import pytest

from datastream_app.models import Setting
from datastream_app.stores.model import ModelStore
from tests.stores.contract import *  # noqa: F403 - the contract's tests run here
from tests.stores.contract import Harness, Sample

pytestmark = pytest.mark.django_db(transaction=True)

SAMPLES = {
    "max_connections": Sample("int", b"10", b"25", b"ten"),
    "debug_enabled": Sample("bool", b"false", b"true", b"maybe"),
    "limits": Sample("json", b'{"a":1}', b'{"a":2}', b"{"),
    "greeting": Sample("string", b"hello", b"bye"),
}


def outside_write(key: str, value_type: str, value: bytes) -> None:
    # Any code saving the model, not going through the store.
    setting = Setting.objects.get(key=key)
    setting.value = value
    setting.save()


@pytest.fixture
def harness() -> Harness:
    for key, sample in SAMPLES.items():
        Setting.objects.create(key=key, value_type=sample.value_type, value=sample.initial)
    config = {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""}
    return Harness(store=ModelStore(alias="default"), samples=SAMPLES, outside_write=outside_write, config=config)
