"""The admin in a real browser (Debian's chromium through Playwright) against a live server: what a person sees.

Outside CI a machine without chromium or Playwright skips these; in CI that is a
failure (``.ci/run`` installs chromium, requirements-dev.txt Playwright).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from datastream_app.models import Setting, SettingChange
from tests.servers import in_ci

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = os.environ.get("DATASTREAM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "a browser's password"
# Where the screenshots go, to look at after a run; a temporary directory otherwise.
SCREENSHOTS = os.environ.get("DATASTREAM_SCREENSHOTS")


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    # Playwright's sync API keeps an event loop in this thread, which Django
    # takes for async code and refuses the ORM; the tests' queries are plain
    # blocking ones (the live server answers from its own threads).
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, live_server: Any, transactional_db: Any, settings: Any) -> Iterator[Any]:
    """A 1280 x 900 page logged in to the admin as a superuser."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; the login is not under test
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    tab.goto("/admin/login/")
    tab.fill("#id_username", "ops")
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit]")
    tab.wait_for_url("**/admin/")
    try:
        yield tab
    finally:
        context.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Save a full-page screenshot (to $DATASTREAM_SCREENSHOTS when set) and return its path."""
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def long_history(setting: Setting, count: int) -> None:
    """``count`` more history rows for ``setting``, with long json values."""
    SettingChange.objects.bulk_create(
        SettingChange(
            setting=setting,
            key=setting.key,
            value_type=setting.value_type,
            action="update",
            old_value=b'{"regions": ["eu-west-1", "us-east-1", "ap-southeast-2"], "n": %d}' % n,
            new_value=b'{"regions": ["eu-west-1", "us-east-1", "ap-southeast-2"], "n": %d}' % (n + 1),
            revision=10_000 + n,
            actor="deploy-bot",
            interface="rest",
            changed_at=timezone.now(),
        )
        for n in range(count)
    )


def test_login__admin_index_with_the_settings(page, tmp_path):
    assert page.locator("#site-name").inner_text() == "Django administration"
    assert page.get_by_role("link", name="Settings", exact=True).is_visible()
    screenshot(page, "index", tmp_path)


def test_add_form__choosing_a_type__keeps_the_typed_value(page, tmp_path):
    page.goto("/admin/datastream_app/setting/add/")
    assert not page.locator("#id_json_schema").is_visible()  # json settings only
    page.fill("#id_key", "app/workers")
    page.fill("#id_value", "42")

    page.select_option("#id_value_type", "int")
    page.wait_for_selector("#id_value[type=number]")
    assert page.input_value("#id_value") == "42"
    assert page.input_value("#id_key") == "app/workers"
    assert not page.locator("#id_json_schema").is_visible()

    page.select_option("#id_value_type", "string")
    page.wait_for_selector("textarea#id_value")
    assert page.input_value("#id_value") == "42"

    page.select_option("#id_value_type", "json")
    page.wait_for_selector("textarea#id_value.datastream-json")
    assert page.input_value("#id_value") == "42"
    assert page.locator("#id_json_schema").is_visible()
    assert page.input_value("#id_json_schema") == ""  # not "null"

    page.select_option("#id_value_type", "int")
    page.wait_for_selector("#id_value[type=number]")
    screenshot(page, "add-form", tmp_path)
    page.click("input[name=_save]")

    page.wait_for_url("**/admin/datastream_app/setting/")
    setting = Setting.objects.get(key="app/workers")
    assert (setting.value_type, bytes(setting.value), setting.json_schema) == ("int", b"42", None)


def test_add_form__text_a_number_box_cannot_hold__back_when_a_text_type_is_chosen_again(page):
    page.goto("/admin/datastream_app/setting/add/")
    page.fill("#id_value", "true")

    page.select_option("#id_value_type", "int")
    page.wait_for_selector("#id_value[type=number]")
    assert page.input_value("#id_value") == ""
    page.select_option("#id_value_type", "bool")
    page.wait_for_selector("#id_value[type=checkbox]")
    assert page.is_checked("#id_value")
    page.select_option("#id_value_type", "string")
    page.wait_for_selector("textarea#id_value")
    assert page.input_value("#id_value") == "true"


def test_change_form__key_with_many_changes__latest_shown_and_the_save_goes_through(page, tmp_path):
    setting = Setting.objects.create(key="service/limits", value_type="json", value=b'{"n": 0}')
    long_history(setting, 1_200)

    page.goto(f"/admin/datastream_app/setting/{setting.pk}/change/")
    assert page.locator("#history tbody tr").count() == 10
    screenshot(page, "change-form-long-history", tmp_path)
    page.fill("#id_value", '{"n": 1}')
    page.click("input[name=_save]")

    page.wait_for_url("**/admin/datastream_app/setting/")
    assert "was changed successfully" in page.locator("ul.messagelist").inner_text()
    assert bytes(Setting.objects.get(pk=setting.pk).value) == b'{"n":1}'


def test_changelist__secret_column__a_mark_on_secret_rows_and_nothing_on_others(page, tmp_path):
    Setting.objects.create(key="app/password", value_type="string", value=b"hunter2", secret=True)
    Setting.objects.create(key="app/name", value_type="string", value=b"shop")

    page.goto("/admin/datastream_app/setting/")

    secret_cells = {
        row.locator("th.field-key").inner_text(): row.locator("td.field-secret_flag").inner_text().strip()
        for row in page.locator("#result_list tbody tr").all()
    }
    assert secret_cells == {"app/name": "", "app/password": "SECRET"}
    assert page.locator("#result_list img").count() == 0  # no red crosses
    screenshot(page, "changelist", tmp_path)


def test_change_form__history_button__the_keys_setting_changes(page):
    setting = Setting.objects.create(key="app/name", value_type="string", value=b"shop")
    setting.value = b"shop2"
    setting.save()
    Setting.objects.create(key="app/other", value_type="string", value=b"x")

    page.goto(f"/admin/datastream_app/setting/{setting.pk}/change/")
    page.locator(".object-tools").get_by_role("link", name="History").click()

    page.wait_for_url("**/admin/datastream_app/settingchange/?key=app%2Fname")
    assert page.locator("h1").inner_text() == "Changes of app/name"
    keys = page.locator("#result_list tbody td.field-key").all_inner_texts()
    assert keys == ["app/name", "app/name"]


@pytest.mark.parametrize("path", ["/admin/datastream_app/setting/", "/admin/datastream_app/settingchange/"])
def test_changelist_at_1280_px__every_column_beside_the_filter_panel(page, tmp_path, path):
    setting = Setting.objects.create(
        key="service/limits",
        value_type="json",
        value=b'{"max_connections_per_client": 100, "regions": ["eu-west-1", "us-east-1", "ap-southeast-2"]}',
    )
    long_history(setting, 30)
    Setting.objects.create(key="app/password", value_type="string", value=b"hunter2", secret=True)

    page.goto(path)

    layout = page.evaluate(
        """() => {
          const panel = document.getElementById("changelist-filter").getBoundingClientRect();
          const results = document.querySelector("#changelist .results");
          const cells = [...document.querySelectorAll("#result_list th, #result_list td")];
          return {
            panelLeft: panel.left,
            overflow: results.scrollWidth - results.clientWidth,
            columns: [...document.querySelectorAll("#result_list thead th")].map((th) => th.innerText.trim()),
            rightmost: Math.max(...cells.map((cell) => cell.getBoundingClientRect().right)),
          };
        }"""
    )
    screenshot(page, "changelist-1280" + path.replace("/", "-").rstrip("-"), tmp_path)
    assert layout["overflow"] <= 0, layout  # nothing to scroll to
    assert layout["rightmost"] <= layout["panelLeft"], layout
    assert len(layout["columns"]) >= 6
