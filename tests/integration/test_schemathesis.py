"""Hostile REST input generated from our own OpenAPI schema: no request may produce a server error."""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from datastream_app.access import Grant, issue_token
from settings_service.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", application)
STATUSES: collections.Counter[tuple[str, int]] = collections.Counter()


@pytest.fixture
def token(transactional_db) -> str:
    """Demo settings, and a token that may do everything, so requests get past authentication."""
    from tests.conftest import make_settings

    make_settings()
    _, text = issue_token(name="fuzzer", grants=[Grant("", read=True, write=True, secrets=True)])
    return text


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db(transaction=True)
def test_api__generated_requests__never_a_server_error(case, token):
    response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])
    STATUSES[(case.path, response.status_code)] += 1


def test_api__generated_requests__reached_the_views():
    # Runs after the fuzzing above: it must have got past authentication into
    # the services, or it proved nothing.
    assert STATUSES[("/api/v1/push", 200)] > 0
    assert STATUSES[("/api/v1/sync", 200)] > 0
    assert any(status == 400 for (path, status) in STATUSES if path == "/api/v1/push")
