"""Hostile REST input generated from our own OpenAPI schema: no request may produce a server error."""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from datastream_app.access import Grant, issue_token
from settings_service.wsgi import application
from tests.conftest import DEMO

schema = schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", application)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(transactional_db) -> str:
    """Demo settings, and a token that may do everything, so requests get past authentication."""
    from tests.conftest import make_settings

    make_settings()
    _, text = issue_token(name="fuzzer", grants=[Grant("", read=True, write=True, secrets=True)])
    return text


@schema.parametrize()
@FUZZ
def test_api__generated_requests__never_a_server_error(case, token):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])


def aimed_at_demo_keys(pair: tuple[schemathesis.Case, str]) -> schemathesis.Case:
    """The generated request, its body's key (if it has one) replaced by an existing demo key; the rest stays fuzzed."""
    case, key = pair
    if isinstance(case.body, dict) and "key" in case.body:
        case.body = {**case.body, "key": key}
    return case


@pytest.mark.parametrize(
    ("method", "path", "expected"), [("POST", "/api/v1/push", {200, 400}), ("GET", "/api/v1/sync", {200})]
)
def test_api__generated_requests__reach_the_views(method, path, expected, token):
    # The fuzzing above proves nothing if every request stops at authentication
    # or at an unknown key: generated requests must get into the services, some
    # accepted and (for push) some refused by the value's validation.
    statuses: collections.Counter[int] = collections.Counter()
    keys = st.sampled_from([key for key, _, _ in DEMO])

    @given(case=st.tuples(schema[path][method].as_strategy(), keys).map(aimed_at_demo_keys))
    @FUZZ
    def fuzz(case: schemathesis.Case) -> None:
        statuses[case.call(headers={"Authorization": f"Bearer {token}"}).status_code] += 1

    fuzz()

    assert expected <= set(statuses), dict(statuses)
