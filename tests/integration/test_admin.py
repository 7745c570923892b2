"""The admin through the Django test client: lists, typed value widgets, validation, history, deletes."""

from __future__ import annotations

import asyncio
import base64
import re
from html.parser import HTMLParser

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from datastream_app.models import Revision, Setting, SettingChange
from tests.conftest import request

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/datastream_app/setting/"
ADD = "/admin/datastream_app/setting/add/"
HISTORY_CHANGELIST = "/admin/datastream_app/settingchange/"


def change_url(setting: Setting) -> str:
    """The admin change page of ``setting``."""
    return f"/admin/datastream_app/setting/{setting.pk}/change/"


class FormFields(HTMLParser):
    """Collects what a browser would submit from the page's main form (unticked checkboxes left out)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, str] = {}
        self.inputs: dict[str, dict[str, str | None]] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.inside = attributes.get("id") == self.form_id
        if not self.inside:
            return
        name = attributes.get("name")
        if tag == "input" and name:
            self.inputs[name] = attributes
            if attributes.get("type") == "checkbox":
                if "checked" in attributes:
                    self.data[name] = attributes.get("value") or "on"
            elif attributes.get("type") not in ("submit", "button"):
                self.data[name] = attributes.get("value") or ""
        elif tag == "textarea" and name:
            self.inputs[name] = attributes
            self._textarea = name
            self.data[name] = ""
        elif tag == "select" and name:
            self.inputs[name] = attributes
            self._select = name
        elif tag == "option" and self._select and "selected" in attributes:
            self.data[self._select] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            # Browsers drop the one newline that follows <textarea>.
            text = self.data[self._textarea] + data
            self.data[self._textarea] = text[1:] if text.startswith("\n") and not self.data[self._textarea] else text


def form_of(html: str, form_id: str = "setting_form") -> FormFields:
    """The fields of the form ``form_id`` in ``html``."""
    parser = FormFields(form_id)
    parser.feed(html)
    assert parser.data or parser.inputs, f"no form {form_id!r} on the page"
    return parser


def set_fields(setting: Setting, **fields: object) -> None:
    """Save ``fields`` on ``setting`` the supported way (Setting.objects.update() is refused)."""
    fresh = Setting.objects.get(pk=setting.pk)
    for name, value in fields.items():
        setattr(fresh, name, value)
    fresh.save()


def snapshot() -> dict[str, tuple[bytes, int, str]]:
    """Every setting's stored value, revision and type."""
    return {s.key: (bytes(s.value), s.revision, s.value_type) for s in Setting.objects.all()}


@pytest.fixture
def superuser() -> User:
    """An admin who may do everything."""
    return User.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_client(client: Client, superuser: User) -> Client:
    """The test client logged in as the superuser."""
    client.force_login(superuser)
    return client


@pytest.fixture
def viewer_client(client: Client) -> Client:
    """The test client logged in as staff who may view settings but not change them."""
    user = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_setting"), Permission.objects.get(codename="view_settingchange")
    )
    client.force_login(user)
    return client


def post_change(client: Client, setting: Setting, **fields: str | None) -> object:
    """Submit the change form of ``setting`` as a browser would, with ``fields`` edited (None: left out)."""
    page = client.get(change_url(setting))
    assert page.status_code == 200
    data = form_of(page.content.decode()).data
    for name, value in fields.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return client.post(change_url(setting), data)


# Changelist


def test_changelist__superuser__every_setting_with_value_preview(admin_client, demo):
    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    for key in demo:
        assert f">{key}</a>" in html
    assert "&lt;3 bytes&gt;" in html  # the blob is previewed by size, not dumped
    assert "{&quot;a&quot;:1}" in html


def test_changelist__search_by_key__only_matching_settings(admin_client, demo):
    response = admin_client.get(CHANGELIST, {"q": "rate"})

    keys = [row.key for row in response.context["cl"].result_list]
    assert keys == ["rate_limit"]


def test_changelist__filter_by_value_type__only_that_type(admin_client, demo):
    response = admin_client.get(CHANGELIST, {"value_type__exact": "int"})

    keys = [row.key for row in response.context["cl"].result_list]
    assert keys == ["max_connections", "rate_limit"]


def test_changelist__anonymous__redirected_to_login(client, demo):
    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_changelist__secret_column__marks_secret_settings_only(admin_client, demo):
    Setting.objects.create(key="app/token", value_type="string", value=b"s3cret", secret=True)

    response = admin_client.get(CHANGELIST)

    html = response.content.decode()
    assert "icon-no.svg" not in html and "icon-yes.svg" not in html
    cells = dict(
        re.findall(
            r'<th class="field-key"><a href="[^"]*">([^<]*)</a></th>.*?<td class="field-secret_flag">(.*?)</td>', html
        )
    )
    assert cells.pop("app/token").startswith('<span class="datastream-secret"')
    assert set(cells) == set(demo) and set(cells.values()) == {""}


def test_admin__view_site__a_page_that_exists(admin_client, demo):
    html = admin_client.get("/admin/").content.decode()

    (site,) = re.findall(r'<a href="([^"]*)">View site</a>', html)
    assert site != "/"
    assert admin_client.get(site).status_code == 200


# Change form widgets


def test_change_form__bool_setting__checkbox_reflecting_the_value(admin_client, demo):
    form = form_of(admin_client.get(change_url(demo["debug_enabled"])).content.decode())

    assert form.inputs["value"]["type"] == "checkbox"
    assert "checked" not in form.inputs["value"]

    set_fields(demo["debug_enabled"], value=b"true")
    form = form_of(admin_client.get(change_url(demo["debug_enabled"])).content.decode())
    assert "checked" in form.inputs["value"]


def test_change_form__int_setting__number_input_with_the_value(admin_client, demo):
    form = form_of(admin_client.get(change_url(demo["max_connections"])).content.decode())

    assert form.inputs["value"]["type"] == "number"
    assert form.inputs["value"].get("step") in (None, "1")
    assert form.data["value"] == "10"


def test_change_form__float_setting__number_input_with_step_any(admin_client, demo):
    form = form_of(admin_client.get(change_url(demo["ratio"])).content.decode())

    assert form.inputs["value"]["type"] == "number"
    assert form.inputs["value"]["step"] == "any"
    assert form.data["value"] == "0.5"


def test_change_form__json_setting__textarea_with_indented_json(admin_client, demo):
    html = admin_client.get(change_url(demo["limits"])).content.decode()
    form = form_of(html)

    assert "<textarea" in html and 'name="value"' in html
    assert form.data["value"] == '{\n  "a": 1\n}'


def test_change_form__bytes_setting__base64_text(admin_client, demo):
    form = form_of(admin_client.get(change_url(demo["blob"])).content.decode())

    assert form.data["value"] == "AAH/"


def test_change_form__key_and_type__read_only_once_created(admin_client, demo):
    form = form_of(admin_client.get(change_url(demo["max_connections"])).content.decode())

    assert "key" not in form.inputs
    assert "value_type" not in form.inputs


# Change form validation


@pytest.mark.parametrize(
    ("key", "fields", "error"),
    [
        ("max_connections", {"value": "abc"}, "Enter a whole number."),
        ("max_connections", {"value": "9223372036854775808"}, "less than or equal to 9223372036854775807"),
        ("max_connections", {"value": ""}, "This field is required."),
        ("ratio", {"value": "nan"}, "Enter a number."),
        ("ratio", {"value": "1e999"}, "Enter a number."),
        ("debug_enabled", {"value": "maybe"}, "Enter true or false."),
        ("limits", {"value": "{not json"}, "not valid JSON"),
        ("limits", {"value": "[" * 100_000}, "json nests deeper than 64 levels"),
        ("limits", {"value": '{"a": "x"}', "json_schema": '{"properties": {"a": {"type": "integer"}}}'}, "at a"),
        ("limits", {"json_schema": '{"type": "nonsense"}'}, "invalid JSON Schema"),
        ("blob", {"value": "not base64!"}, "not valid base64"),
    ],
)
def test_change_form__value_that_does_not_fit__form_error_and_nothing_changes(admin_client, demo, key, fields, error):
    before, history_before, revision_before = snapshot(), SettingChange.objects.count(), Revision.current()

    response = post_change(admin_client, demo[key], **fields)

    assert response.status_code == 200  # re-rendered, not redirected
    assert response.context["adminform"].form.errors
    assert error in response.content.decode()
    assert 'class="errornote"' in response.content.decode()
    assert snapshot() == before
    assert SettingChange.objects.count() == history_before
    assert Revision.current() == revision_before


def test_change_form__json_violating_the_settings_schema__error_naming_the_violation(admin_client, demo):
    Setting.objects.create(
        key="service.limits",
        value_type="json",
        value=b'{"max": 5}',
        json_schema={"type": "object", "properties": {"max": {"type": "integer", "maximum": 10}}},
    )
    setting = Setting.objects.get(key="service.limits")

    response = post_change(admin_client, setting, value='{"max": 50}')

    assert response.status_code == 200
    assert "value does not match the JSON Schema at max: 50 is greater than the maximum of 10" in (
        response.content.decode()
    )
    assert bytes(Setting.objects.get(key="service.limits").value) == b'{"max":5}'


def test_change_form__value_over_the_size_limit__form_error_and_nothing_changes(admin_client, demo, settings):
    settings.DATASTREAM = {**settings.DATASTREAM, "MAX_VALUE_BYTES": 8}

    response = post_change(admin_client, demo["greeting"], value="123456789")

    assert response.status_code == 200
    assert "value is 9 bytes; the limit is 8 bytes" in response.content.decode()
    assert bytes(Setting.objects.get(key="greeting").value) == b"hello"


# Change form saves


def test_change_form__valid_edit__saved_with_next_revision_and_admin_history(admin_client, demo):
    revision_before = Revision.current()

    response = post_change(admin_client, demo["max_connections"], value="20")

    assert response.status_code == 302
    setting = Setting.objects.get(key="max_connections")
    assert bytes(setting.value) == b"20"
    assert setting.revision == revision_before + 1
    change = SettingChange.objects.get(revision=setting.revision)
    assert (change.key, change.action, change.actor, change.interface) == ("max_connections", "update", "root", "admin")
    assert (bytes(change.old_value), bytes(change.new_value)) == (b"10", b"20")
    assert change.setting_id == setting.pk


@pytest.mark.parametrize(
    ("key", "fields", "stored"),
    [
        ("debug_enabled", {"value": "on"}, b"true"),
        ("ratio", {"value": "0.25"}, b"0.25"),
        ("ratio", {"value": "3"}, b"3.0"),
        ("rate_limit", {"value": "-5"}, b"-5"),
        ("greeting", {"value": "héllo wörld"}, "héllo wörld".encode()),
        ("greeting", {"value": ""}, b""),
        ("limits", {"value": '{\n  "a": 2,\n  "b": [true, null]\n}'}, b'{"a":2,"b":[true,null]}'),
        ("blob", {"value": "AQID"}, b"\x01\x02\x03"),
        ("blob", {"value": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\nISIj"}, bytes(range(36))),
    ],
)
def test_change_form__valid_value_of_each_type__stored_in_wire_form(admin_client, demo, key, fields, stored):
    response = post_change(admin_client, demo[key], **fields)

    assert response.status_code == 302
    assert bytes(Setting.objects.get(key=key).value) == stored


def test_change_form__bool_unticked__stored_false(admin_client, demo):
    set_fields(demo["debug_enabled"], value=b"true")

    response = post_change(admin_client, demo["debug_enabled"], value=None)

    assert response.status_code == 302
    assert bytes(Setting.objects.get(key="debug_enabled").value) == b"false"


def test_change_form__value_unchanged__no_revision_and_no_history(admin_client, demo):
    before, history_before = snapshot(), SettingChange.objects.count()

    response = post_change(admin_client, demo["limits"], description="the limits")

    assert response.status_code == 302
    assert Setting.objects.get(key="limits").description == "the limits"
    assert snapshot() == before
    assert SettingChange.objects.count() == history_before


# History


def test_change_page__after_edits__history_section_shows_the_keys_changes(admin_client, demo):
    post_change(admin_client, demo["max_connections"], value="20")
    post_change(admin_client, demo["rate_limit"], value="7")

    response = admin_client.get(change_url(demo["max_connections"]))

    history = response.context["datastream_history"]
    assert [(r["action"], r["new"], r["actor"]) for r in history["rows"]] == [
        ("update", "20", "root"),
        ("create", "10", ""),
    ]
    assert history["total"] == 2
    html = response.content.decode()
    assert "<h2>History</h2>" in html
    assert f'href="{HISTORY_CHANGELIST}?key=max_connections"' in html


def test_change_page__history_button__goes_to_the_keys_setting_changes(admin_client, demo):
    html = admin_client.get(change_url(demo["max_connections"])).content.decode()

    (button,) = re.findall(r'<a href="([^"]*)" class="historylink">', html)
    assert button == f"{HISTORY_CHANGELIST}?key=max_connections"
    page = admin_client.get(button)
    assert page.status_code == 200
    assert [row.key for row in page.context["cl"].result_list] == ["max_connections"]
    assert "<h1>Changes of max_connections</h1>" in page.content.decode()


def test_django_admin_log_page__links_to_the_keys_setting_changes(admin_client, demo):
    html = admin_client.get(f"/admin/datastream_app/setting/{demo['ratio'].pk}/history/").content.decode()

    assert f'href="{HISTORY_CHANGELIST}?key=ratio"' in html


def test_change_page__long_history__latest_rows_only_no_form_fields_and_the_save_goes_through(admin_client, demo):
    setting = demo["max_connections"]
    SettingChange.objects.bulk_create(
        SettingChange(
            setting=setting,
            key=setting.key,
            value_type="int",
            action="update",
            old_value=str(n).encode(),
            new_value=str(n + 1).encode(),
            revision=1_000 + n,
            actor="bulk",
            changed_at=timezone.now(),
        )
        for n in range(1_250)
    )

    page = admin_client.get(change_url(setting))
    html = page.content.decode()
    form = form_of(html)
    response = admin_client.post(change_url(setting), {**form.data, "value": "12"})

    assert len(page.context["datastream_history"]["rows"]) == 10
    history = html.split('id="history"', 1)[1].split("</table>", 1)[0]
    assert history.count("<tr>") == 11  # the header and ten changes
    assert "The latest 10 of 1251 changes." in html
    # What a browser posts: the form's own fields and the CSRF token, no history rows.
    assert set(form.data) == {"csrfmiddlewaretoken", "value", "description"}
    assert len(html) < 60_000
    assert response.status_code == 302
    assert bytes(Setting.objects.get(pk=setting.pk).value) == b"12"


def test_setting_change_changelist__filtered_by_key__only_that_keys_history(admin_client, demo):
    post_change(admin_client, demo["max_connections"], value="20")

    response = admin_client.get(HISTORY_CHANGELIST, {"key": "max_connections"})

    assert response.status_code == 200
    rows = list(response.context["cl"].result_list)
    assert [(r.key, r.action, r.interface) for r in rows] == [
        ("max_connections", "update", "admin"),
        ("max_connections", "create", "code"),
    ]
    assert "rate_limit" not in response.content.decode()


def test_setting_change_admin__any_user__history_cannot_be_edited_or_added(admin_client, demo):
    change = SettingChange.objects.first()

    assert admin_client.get(f"{HISTORY_CHANGELIST}add/").status_code == 403
    response = admin_client.post(f"{HISTORY_CHANGELIST}{change.pk}/change/", {"actor": "forged"})
    assert response.status_code == 403
    assert SettingChange.objects.get(pk=change.pk).actor == ""


# Add form


def test_add_form__type_chosen_in_query__widget_for_that_type(admin_client, demo):
    assert form_of(admin_client.get(ADD, {"value_type": "bool"}).content.decode()).inputs["value"]["type"] == "checkbox"
    assert form_of(admin_client.get(ADD, {"value_type": "float"}).content.decode()).inputs["value"]["step"] == "any"
    html = admin_client.get(ADD, {"value_type": "json"}).content.decode()
    assert "datastream-json" in html


def test_add_form__page__swaps_the_value_widget_for_the_chosen_type(admin_client, demo):
    html = admin_client.get(ADD).content.decode()

    assert '<script src="/static/datastream_app/setting_add.js" id="datastream-value-type-switch">' in html
    # The switch belongs to the add form only: the type of an existing setting is fixed.
    assert "datastream-value-type-switch" not in admin_client.get(change_url(demo["ratio"])).content.decode()
    # It fetches the add form for the chosen type and takes its value row: rendered by the server.
    fetched = admin_client.get(ADD, {"value_type": "int"}).content.decode()
    assert re.search(r'<div class="form-row[^"]*field-value', fetched)


def test_add_form__no_history_section_and_an_empty_schema_box(admin_client, demo):
    response = admin_client.get(ADD)
    html = response.content.decode()

    assert "History" not in html
    assert "datastream_history" not in response.context
    assert form_of(html).data["json_schema"] == ""


@pytest.mark.parametrize(("schema", "shown"), [(None, ""), ({"type": "object"}, '{"type": "object"}')])
def test_change_form__json_setting__schema_box_empty_without_a_schema(admin_client, demo, schema, shown):
    set_fields(demo["limits"], json_schema=schema)

    form = form_of(admin_client.get(change_url(demo["limits"])).content.decode())

    assert form.data["json_schema"] == shown


@pytest.mark.parametrize(
    ("value_type", "value", "stored"),
    [
        ("int", "42", b"42"),
        ("float", "2.5", b"2.5"),
        ("bool", "on", b"true"),
        ("bool", None, b"false"),
        ("bool", "false", b"false"),
        ("string", "hi there", b"hi there"),
        ("json", '{"x": [1, 2]}', b'{"x":[1,2]}'),
        ("bytes", base64.b64encode(b"\x00raw\xff").decode(), b"\x00raw\xff"),
    ],
)
def test_add_form__each_type__setting_created_with_create_history(admin_client, demo, value_type, value, stored):
    data = {"key": f"new.{value_type}", "value_type": value_type, "json_schema": "", "description": ""}
    if value is not None:
        data["value"] = value
    revision_before = Revision.current()

    response = admin_client.post(ADD, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    setting = Setting.objects.get(key=f"new.{value_type}")
    assert (setting.value_type, bytes(setting.value), setting.revision) == (value_type, stored, revision_before + 1)
    change = SettingChange.objects.get(revision=setting.revision)
    assert (change.action, change.old_value, bytes(change.new_value)) == ("create", None, stored)
    assert (change.actor, change.interface) == ("root", "admin")


def test_add_form__json_with_schema__value_checked_against_it(admin_client, demo):
    base = {"key": "new.json", "value_type": "json", "json_schema": '{"type": "array"}', "description": ""}

    rejected = admin_client.post(ADD, {**base, "value": '{"not": "an array"}'})
    accepted = admin_client.post(ADD, {**base, "value": "[1]"})

    assert rejected.status_code == 200
    assert "is not of type &#x27;array&#x27;" in rejected.content.decode()
    assert accepted.status_code == 302
    assert Setting.objects.get(key="new.json").json_schema == {"type": "array"}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"key": "max_connections", "value_type": "int", "value": "1"}, "Setting with this Key already exists."),
        ({"key": "has space", "value_type": "int", "value": "1"}, "may contain only letters"),
        ({"key": "nul%00", "value_type": "int", "value": "1"}, "may contain only letters"),
        ({"key": "new.int", "value_type": "int", "value": "one"}, "Enter a whole number."),
        ({"key": "new.bool", "value_type": "bool", "value": "no"}, "Enter true or false."),
        ({"key": "new.x", "value_type": "decimal", "value": "1"}, "Select a valid choice."),
        (
            {"key": "new.int2", "value_type": "int", "value": "1", "json_schema": '{"type": "object"}'},
            "applies to json settings only",
        ),
    ],
)
def test_add_form__invalid_input__form_error_and_nothing_created(admin_client, demo, data, error):
    before, history_before = snapshot(), SettingChange.objects.count()
    data = {"json_schema": "", "description": "", **data}

    response = admin_client.post(ADD, data)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert snapshot() == before
    assert SettingChange.objects.count() == history_before


# Delete


def test_delete__single_setting__gone_with_delete_history(admin_client, demo):
    revision_before = Revision.current()

    response = admin_client.post(f"/admin/datastream_app/setting/{demo['ratio'].pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Setting.objects.filter(key="ratio").exists()
    change = SettingChange.objects.get(revision=revision_before + 1)
    assert (change.key, change.action, change.actor, change.interface) == ("ratio", "delete", "root", "admin")
    assert (bytes(change.old_value), change.new_value, change.setting_id) == (b"0.5", None, None)
    # The key's earlier history outlives it.
    assert SettingChange.objects.filter(key="ratio", action="create").exists()


def test_delete__bulk_action__one_delete_history_row_and_revision_each(admin_client, demo):
    revision_before = Revision.current()
    chosen = [demo["greeting"].pk, demo["blob"].pk]

    response = admin_client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": chosen, "post": "yes"})

    assert response.status_code == 302
    assert set(Setting.objects.values_list("key", flat=True)) == set(demo) - {"greeting", "blob"}
    deletes = SettingChange.objects.filter(action="delete").order_by("revision")
    assert sorted(d.key for d in deletes) == ["blob", "greeting"]
    assert [d.revision for d in deletes] == [revision_before + 1, revision_before + 2]
    assert {(d.actor, d.interface) for d in deletes} == {("root", "admin")}
    assert Revision.current() == revision_before + 2


# Staff without change permission


def test_change_page__staff_without_change_permission__typed_value_read_only(viewer_client, demo):
    response = viewer_client.get(change_url(demo["blob"]))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="value"' not in html
    assert '<pre class="datastream-value">AAH/</pre>' in html
    assert "b&#x27;" not in html  # not the Python repr of the stored bytes


def test_change_form__staff_without_change_permission__post_forbidden_and_nothing_changes(viewer_client, demo):
    before = snapshot()

    response = viewer_client.post(change_url(demo["max_connections"]), {"value": "99"})

    assert response.status_code == 403
    assert snapshot() == before


def test_delete__staff_without_delete_permission__forbidden_and_nothing_deleted(viewer_client, demo):
    response = viewer_client.post(f"/admin/datastream_app/setting/{demo['ratio'].pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Setting.objects.filter(key="ratio").exists()
    assert not SettingChange.objects.filter(action="delete").exists()


# Live


async def test_change_form__valid_edit__reaches_a_live_grpc_subscriber(client, stub):
    superuser = await sync_to_async(User.objects.create_superuser)("root", "root@example.com", "pw")
    await sync_to_async(client.force_login)(superuser)
    setting = await Setting.objects.aget(key="max_connections")
    call = stub.Subscribe(request("max_connections"))
    first = await call.read()

    response = await sync_to_async(post_change)(client, setting, value="77")
    update = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert first.data["max_connections"].value == b"10"
    assert response.status_code == 302
    assert update.data["max_connections"].value == b"77"
    stored = await Setting.objects.aget(key="max_connections")
    assert update.data["max_connections"].revision == stored.revision > first.data["max_connections"].revision


def test_change_form__non_json_setting__no_schema_field_and_a_posted_schema_ignored(admin_client, demo):
    page = admin_client.get(f"/admin/datastream_app/setting/{demo['max_connections'].pk}/change/").content.decode()

    response = post_change(admin_client, demo["max_connections"], value="11", json_schema='{"type": "object"}')

    assert 'name="json_schema"' not in page
    assert response.status_code == 302
    setting = Setting.objects.get(key="max_connections")
    assert (bytes(setting.value), setting.json_schema) == (b"11", None)
