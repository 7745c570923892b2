"""Just enough of a browser for the Django admin over real HTTP: cookies, the change form's fields, posting it."""

from __future__ import annotations

import http.client
import re
from html.parser import HTMLParser
from urllib.parse import urlencode


class FormFields(HTMLParser):
    """The fields of an HTML form as a browser would submit them (unticked checkboxes left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "checkbox"):
            self.fields[name] = a.get("value") or ""
        elif tag == "input" and name and a.get("type") == "checkbox" and "checked" in a:
            self.fields[name] = "on"
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None


class AdminSession:
    """A logged-in admin user talking HTTP to ``127.0.0.1:port``; cookies kept by hand (they may be Secure)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        """One request with the session's cookies; returns status and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
            body = None
            if form is not None:
                body = urlencode(form)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
            return response.status, response.read().decode()
        finally:
            conn.close()

    def form(self, path: str) -> dict[str, str]:
        """GET ``path`` and return its form's fields."""
        status, page = self.request("GET", path)
        assert status == 200, page[:500]
        parser = FormFields()
        parser.feed(page)
        return parser.fields

    def login(self, username: str, password: str) -> None:
        """Log in through the admin's login form."""
        fields = self.form("/admin/login/")
        status, page = self.request(
            "POST", "/admin/login/", {**fields, "username": username, "password": password, "next": "/admin/"}
        )
        assert status == 302, page[:500]

    def change_path(self, key: str) -> str:
        """The change form's path of the setting ``key``, found through the change list's search."""
        status, page = self.request("GET", f"/admin/datastream_app/setting/?q={key}")
        assert status == 200, page[:500]
        ids = set(re.findall(r"/admin/datastream_app/setting/(\d+)/change/", page))
        assert len(ids) == 1, ids
        return f"/admin/datastream_app/setting/{ids.pop()}/change/"

    def save(self, path: str, value: str) -> tuple[int, str]:
        """Load the change form, set its value and post it, as a person pressing Save does."""
        fields = self.form(path)
        return self.request("POST", path, {**fields, "value": value, "_save": "Save"})
