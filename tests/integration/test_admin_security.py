"""The admin keeps secret values secret: no guessing through query-string lookups, no mix-up between users' requests."""

from __future__ import annotations

import html
import re
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections
from django.template.response import SimpleTemplateResponse
from django.test import Client

from datastream_app.models import Setting, SettingChange

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/datastream_app/setting/"
HISTORY_CHANGELIST = "/admin/datastream_app/settingchange/"
SECRET_KEY = "app/secret"
SECRET = "hunter2"
MASK = "••••••"


def staff(username: str, *codenames: str) -> User:
    """A staff user with the given permissions of this app."""
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def logged_in(user: User) -> Client:
    """A fresh test client with ``user``'s session."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def secret_setting() -> Setting:
    """A secret string setting with a create and an update in its history."""
    setting = Setting.objects.create(key=SECRET_KEY, value_type="string", value=b"hunter1", secret=True)
    setting.value = SECRET.encode()
    setting.save()
    Setting.objects.create(key="app/plain", value_type="string", value=b"plain")
    assert SettingChange.objects.filter(key=SECRET_KEY, secret=True).count() == 2
    return setting


@pytest.fixture
def viewer() -> Client:
    """Staff who may view settings and their changes, but not secret values."""
    return logged_in(staff("viewer", "view_setting", "view_settingchange"))


# Lookups on value fields

# (lookup, right guess, wrong guess): each right guess matches the secret's
# current value on the setting and its old or new value on a history row.
# Guesses are distinctive, since each is blanked out of the answers compared.
VALUE_LOOKUPS = [
    ("", SECRET, "hunter3"),
    ("__exact", SECRET, "hunter3"),
    ("__iexact", SECRET.upper(), "HUNTER3"),
    ("__contains", "unter", "xyz"),
    ("__icontains", "UNTER", "XYZ"),
    ("__startswith", "hunt", "abc"),
    ("__istartswith", "HUNT", "ABC"),
    ("__endswith", "er2", "er9"),
    ("__regex", "^hun", "^xyz"),
    ("__iregex", "^HUN", "^XYZ"),
    ("__gte", "aaa0", "zzz9"),
    ("__gt", "aaa0", "zzz9"),
    ("__lte", "zzz9", "aaa0"),
    ("__lt", "zzz9", "aaa0"),
    ("__in", f"{SECRET},xxx7", "nope,xxx7"),
    ("__range", "aaa0,zzz9", "xxx0,zzz9"),
    ("__isnull", "False", "True"),
]

VALUE_FIELDS = [
    (CHANGELIST, "value"),
    (HISTORY_CHANGELIST, "new_value"),
    (HISTORY_CHANGELIST, "old_value"),
    (HISTORY_CHANGELIST, "setting__value"),
]


def answer(client: Client, url: str, params: dict[str, str], guess: str) -> tuple[int, int | None, str, str]:
    """Status, row count, Location and body of a list page, with the guess and per-response tokens blanked out."""
    response = client.get(url, params)
    body = response.content.decode()
    location = response.get("Location", "")
    for form in {guess, urllib.parse.quote(guess), urllib.parse.quote_plus(guess), html.escape(guess)}:
        body = body.replace(form, "GUESS")
        location = location.replace(form, "GUESS")
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", body)
    context = response.context
    rows = context["cl"].result_count if context is not None and "cl" in context else None
    return response.status_code, rows, location, body


@pytest.mark.parametrize(("url", "field"), VALUE_FIELDS)
def test_list_lookup_on_a_value__right_and_wrong_guess__answered_identically(viewer, secret_setting, url, field):
    key_filter = {"key": SECRET_KEY} if url == HISTORY_CHANGELIST else {"q": SECRET_KEY}
    told_apart = []

    for lookup, right, wrong in VALUE_LOOKUPS:
        name = f"{field}{lookup}"
        right_answer = answer(viewer, url, {**key_filter, name: right}, right)
        wrong_answer = answer(viewer, url, {**key_filter, name: wrong}, wrong)
        if right_answer != wrong_answer or right_answer[0] == 500 or right_answer[1]:
            told_apart.append((name, right_answer[:3], wrong_answer[:3]))

    assert told_apart == []


def test_list_lookup_on_a_value__superuser_too__refused_without_an_error(secret_setting, superuser_client):
    for url, field in VALUE_FIELDS:
        response = superuser_client.get(url, {f"{field}__gte": "abc"})
        assert response.status_code == 400, (url, field)


def test_list_lookup_on_a_token_hash__refused(superuser_client, secret_setting):
    response = superuser_client.get("/admin/datastream_app/apitoken/", {"secret_hash__startswith": "a"})

    assert response.status_code == 400


@pytest.fixture
def superuser_client() -> Client:
    """A superuser's client."""
    return logged_in(User.objects.create_superuser("root", "root@example.com", "pw"))


@pytest.mark.parametrize(
    ("url", "params", "rows"),
    [
        (CHANGELIST, {"value_type__exact": "string"}, 2),
        (CHANGELIST, {"secret__exact": "1"}, 1),
        (CHANGELIST, {"secret__exact": "0", "q": "app"}, 1),
        (CHANGELIST, {"value_type__isnull": "False"}, 2),
        (HISTORY_CHANGELIST, {"key": SECRET_KEY}, 2),
        (HISTORY_CHANGELIST, {"key__exact": SECRET_KEY}, 2),
        (HISTORY_CHANGELIST, {"q": "app/"}, 3),
        (HISTORY_CHANGELIST, {"interface__exact": "code"}, 3),
        (HISTORY_CHANGELIST, {"action__exact": "update"}, 1),
        (HISTORY_CHANGELIST, {"value_type": "string"}, 3),
        (HISTORY_CHANGELIST, {"store": ""}, 3),
        (HISTORY_CHANGELIST, {"store__isnull": "True"}, 0),
        (HISTORY_CHANGELIST, {"actor": ""}, 3),
        (HISTORY_CHANGELIST, {"changed_at__year": "2000"}, 0),
    ],
)
def test_list_filters_search_and_date_hierarchy__still_work(viewer, secret_setting, url, params, rows):
    response = viewer.get(url, params)

    assert response.status_code == 200
    assert response.context["cl"].result_count == rows


def test_date_hierarchy__year_month_day__still_work(viewer, secret_setting):
    changed = SettingChange.objects.filter(key=SECRET_KEY).first().changed_at
    params = {"changed_at__year": changed.year, "changed_at__month": changed.month, "changed_at__day": changed.day}

    response = viewer.get(HISTORY_CHANGELIST, params)

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 2


# Concurrent requests of users with and without secret access


@pytest.fixture
def lockstep_rendering(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Barrier]:
    """Every template response waits for one of another thread before rendering.

    Two threads requesting pages then both run their views (the admin's
    queryset and object lookups) before either renders, which is when display
    methods run: the order in which a shared admin instance would mix them up.
    """
    barrier = threading.Barrier(2, timeout=20)
    render = SimpleTemplateResponse.render

    def render_in_lockstep(self: SimpleTemplateResponse) -> Any:
        if not self.is_rendered:
            barrier.wait()
        return render(self)

    monkeypatch.setattr(SimpleTemplateResponse, "render", render_in_lockstep)
    yield barrier
    barrier.abort()


def test_concurrent_requests__users_with_and_without_secret_access__each_sees_their_own_view(
    secret_setting, lockstep_rendering
):
    seer = logged_in(staff("seer", "view_setting", "view_settingchange", "view_secret_setting"))
    blind = logged_in(staff("blind", "view_setting", "view_settingchange"))
    pages = [
        CHANGELIST,
        f"{CHANGELIST}{secret_setting.pk}/change/",
        f"{HISTORY_CHANGELIST}?key={SECRET_KEY}",
    ]
    rounds = 8
    problems: list[str] = []

    def browse(name: str, client: Client, sees: bool) -> None:
        try:
            for round_ in range(rounds):
                # Alternate which of the two pages each user asks for, so
                # different views meet as well as the same one.
                order = pages if round_ % 2 == 0 or sees else pages[1:] + pages[:1]
                for url in order:
                    body = client.get(url).content.decode()
                    if sees and SECRET not in body:
                        problems.append(f"{name} round {round_}: {url} masked the secret")
                    if not sees and (SECRET in body or "hunter1" in body):
                        problems.append(f"{name} round {round_}: {url} showed the secret")
                    if not sees and MASK not in body:
                        problems.append(f"{name} round {round_}: {url} showed no mask")
        except Exception as exc:
            problems.append(f"{name}: {exc!r}")
            lockstep_rendering.abort()
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=browse, args=("seer", seer, True)),
        threading.Thread(target=browse, args=("blind", blind, False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
