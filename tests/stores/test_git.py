"""The contract against the git store, with real repositories under tmp_path, plus its git-specific behaviour.

A bare repository plays the remote; a seeding clone commits the samples and
pushes; the store clones the remote into its own working copy; another clone
plays "someone else" pushing changes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.test import override_settings
from rest_framework.test import APIClient

from datastream_app import services
from datastream_app.audit import Interface, acting
from datastream_app.exceptions import Aborted, InvalidArgument, InvalidValue, PermissionDenied, Unavailable
from datastream_app.models import MirroredEntry, Setting, SettingChange, StoreStatus
from datastream_app.stores.git import GitStore
from tests.conftest import serving
from tests.stores.contract import *  # noqa: F403 - the contract's tests run here
from tests.stores.contract import Harness, Sample, wire
from tests.stores.mirrored_contract import *  # noqa: F403 - and the external stores' contract

pytestmark = pytest.mark.django_db(transaction=True)

PREFIX = "repo/"
SAMPLES = {
    "repo/app/flags.json": Sample("json", b'{"a":1}', b'{"a":2}', b"{"),
    "repo/motd.txt": Sample("string", b"hello", b"bye"),
    "repo/README": Sample("string", b"read me", b"read me again"),
    "repo/blob.bin": Sample("bytes", b"\xff\x00", b"\xfe\x01"),
}
MODEL_STORE = {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""}
SECRET = "s3cret-token"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Someone Else",
    "GIT_AUTHOR_EMAIL": "someone@example.org",
    "GIT_COMMITTER_NAME": "Someone Else",
    "GIT_COMMITTER_EMAIL": "someone@example.org",
}


def git(cwd: Path, *args: str) -> str:
    """Run git as another program would; return its stripped output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | IDENTITY
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)
    return done.stdout.decode("utf-8", "replace").strip()


@dataclass
class Clone:
    """A working clone of the remote, committing and pushing like a person would."""

    path: Path

    def pull(self) -> None:
        """Bring the clone to the remote's head."""
        git(self.path, "fetch", "-q", "origin")
        git(self.path, "reset", "-q", "--hard", "origin/main")

    def write(self, path: str, content: bytes) -> None:
        """Change or add one file (not committed yet)."""
        target = self.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        git(self.path, "add", "--", path)

    def remove(self, path: str) -> None:
        """Delete one file (not committed yet)."""
        git(self.path, "rm", "-q", "--", path)

    def commit(self, message: str = "change") -> str:
        """Commit what is staged; return the commit id."""
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def push(self, remote: str = "origin") -> None:
        """Push the branch."""
        git(self.path, "push", "-q", remote, "HEAD:main")

    def change(self, files: dict[str, bytes | None], message: str = "change") -> str:
        """Pull, change ``files`` (None deletes), commit and push; return the commit id."""
        self.pull()
        for path, content in files.items():
            if content is None:
                self.remove(path)
            else:
                self.write(path, content)
        commit = self.commit(message)
        self.push()
        return commit


@dataclass
class Repos:
    """The remote, the other person's clone and the store's working copy."""

    remote: Path
    other: Clone
    workdir: Path

    def options(self, **extra: Any) -> dict[str, Any]:
        """OPTIONS for a git store on these repositories."""
        return {
            "remote": str(self.remote),
            "workdir": str(self.workdir),
            "poll_interval": 0.2,
            "author_name": "Datastream Bot",
            "author_email": "bot@datastream.test",
        } | extra

    def config(self, **extra: Any) -> dict[str, Any]:
        """A DATASTREAM["STORES"] entry for a git store on these repositories."""
        return {"BACKEND": "datastream_app.stores.git.GitStore", "PREFIX": PREFIX, "OPTIONS": self.options(**extra)}

    def remote_head(self) -> str:
        """The commit the remote's branch points at."""
        return git(self.remote, "rev-parse", "main")


def make_repos(tmp_path: Path, files: dict[str, bytes]) -> Repos:
    """A bare remote seeded with ``files`` (path -> bytes), and a second clone of it."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = Clone(tmp_path / "seed")
    git(tmp_path, "clone", "-q", str(remote), str(seed.path))
    git(seed.path, "checkout", "-q", "-b", "main")
    for path, content in files.items():
        seed.write(path, content)
    seed.commit("seed")
    seed.push()
    other = Clone(tmp_path / "other")
    git(tmp_path, "clone", "-q", str(remote), str(other.path))
    return Repos(remote=remote, other=other, workdir=tmp_path / "work")


def sample_files() -> dict[str, bytes]:
    return {key.removeprefix(PREFIX): sample.initial for key, sample in SAMPLES.items()}


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    return make_repos(tmp_path, sample_files())


@pytest.fixture
def harness(repos: Repos) -> Iterator[Harness]:
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())
    store.refresh()

    def outside_write(key: str, value_type: str, value: bytes) -> None:
        repos.other.change({key.removeprefix(PREFIX): value})

    yield Harness(
        store=store, samples=SAMPLES, outside_write=outside_write, config=repos.config(), notice=store.refresh
    )


def value(store: GitStore, key: str) -> bytes:
    return store.get_many([key])[key].value


def snapshot_of_workdir(workdir: Path) -> dict[str, Any]:
    """HEAD, refs, status and every file's bytes of a working copy."""
    files = {
        str(path.relative_to(workdir)): path.read_bytes()
        for path in sorted(workdir.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(workdir).parts
    }
    return {
        "head": git(workdir, "rev-parse", "HEAD"),
        "branch": git(workdir, "symbolic-ref", "-q", "HEAD"),
        "refs": git(workdir, "for-each-ref", "--format=%(refname) %(objectname)"),
        "status": git(workdir, "status", "--porcelain"),
        "files": files,
    }


# Writes


def test_git_put__remote_moved_on_during_the_push__aborted_and_working_copy_unchanged(harness, repos):
    store = harness.store
    # Someone else's commit, pushed by a pre-push hook: after the store fetched
    # and committed, before its push reaches the remote.
    repos.other.pull()
    repos.other.write("motd.txt", b"pushed first")
    theirs = repos.other.commit("theirs")
    hook = repos.workdir / ".git" / "hooks" / "pre-push"
    hook.write_text(
        "#!/bin/sh\nunset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE\n"
        f"git -C '{repos.other.path}' push -q origin HEAD:main >/dev/null 2>&1\ncat >/dev/null\n"
    )
    hook.chmod(0o755)
    before = snapshot_of_workdir(repos.workdir)

    with pytest.raises(Aborted, match="changed"):
        store.put("repo/app/flags.json", value_type="json", decode=wire(b'{"a":2}'))

    hook.unlink()
    assert repos.remote_head() == theirs
    assert snapshot_of_workdir(repos.workdir) == before
    assert value(store, "repo/app/flags.json") == b'{"a":1}'
    store.refresh()
    assert value(store, "repo/motd.txt") == b"pushed first"


def test_git_put__file_changed_at_the_remote__aborted_without_a_commit(harness, repos):
    theirs = repos.other.change({"app/flags.json": b'{"a":3}'})
    before = snapshot_of_workdir(repos.workdir)

    with pytest.raises(Aborted):
        harness.store.put("repo/app/flags.json", value_type="json", decode=wire(b'{"a":2}'))

    assert repos.remote_head() == theirs
    assert snapshot_of_workdir(repos.workdir)["head"] == before["head"]
    assert value(harness.store, "repo/app/flags.json") == b'{"a":1}'


def test_git_put__another_file_changed_at_the_remote__committed_on_top_of_it(harness, repos):
    theirs = repos.other.change({"motd.txt": b"theirs"})

    harness.store.put("repo/app/flags.json", value_type="json", decode=wire(b'{"a":2}'))

    assert git(repos.remote, "rev-parse", "main^") == theirs
    assert git(repos.remote, "show", "main:motd.txt") == "theirs"
    assert git(repos.remote, "show", "main:app/flags.json") == '{"a":2}'


def test_git_put__valid_value__committed_with_the_configured_author_and_a_message_naming_the_key(harness, repos):
    with acting("alice", Interface.REST):
        harness.store.put("repo/motd.txt", value_type="string", decode=wire(b"bye"))

    author = git(repos.remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main")
    message = git(repos.remote, "log", "-1", "--format=%B", "main")
    assert author == "Datastream Bot <bot@datastream.test>|Datastream Bot <bot@datastream.test>"
    assert message.splitlines()[0] == "datastream: update repo/motd.txt"
    assert "Changed-by: alice via rest" in message
    assert git(repos.workdir, "rev-parse", "HEAD") == repos.remote_head()
    assert (repos.workdir / "motd.txt").read_bytes() == b"bye"


def test_git_put__bytes_value__file_holds_exactly_those_bytes(harness, repos):
    harness.store.put("repo/blob.bin", value_type="bytes", decode=wire(b"\xfe\x01"))

    content = subprocess.run(["git", "show", "main:blob.bin"], cwd=repos.remote, capture_output=True, check=True)
    assert content.stdout == b"\xfe\x01"
    harness.store.refresh()
    assert harness.store.get_many(["repo/blob.bin"])["repo/blob.bin"].value_type == "bytes"


def test_git_put__remote_hook_declines__permission_denied_and_store_still_available(harness, repos):
    hook = repos.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    head = repos.remote_head()

    with pytest.raises(PermissionDenied, match="refused"):
        harness.store.put("repo/motd.txt", value_type="string", decode=wire(b"bye"))

    assert repos.remote_head() == head
    assert value(harness.store, "repo/motd.txt") == b"hello"
    assert (repos.workdir / "motd.txt").read_bytes() == b"hello"


def test_git_put__bytes_key_with_a_utf8_value__invalid_value_and_nothing_committed(harness, repos):
    head = repos.remote_head()

    with pytest.raises(InvalidValue, match="string"):
        harness.store.put("repo/blob.bin", value_type="bytes", decode=wire(b"text"))

    assert repos.remote_head() == head


def test_git_put__yaml_key__invalid_argument_and_nothing_committed(tmp_path):
    repos = make_repos(tmp_path, {"app.yaml": b"a: 1\n"})
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())
    store.refresh()
    head = repos.remote_head()

    with pytest.raises(InvalidArgument, match="YAML"):
        store.put("repo/app.yaml", value_type="json", decode=wire(b'{"a":2}'))

    assert repos.remote_head() == head
    assert value(store, "repo/app.yaml") == b'{"a":1}'


# Reading


def test_git_refresh__new_file__appears_as_a_new_key(harness, repos):
    repos.other.change({"new/limit": b"42"})

    changed = harness.store.refresh()

    assert changed == 1
    entry = harness.store.get_many(["repo/new/limit"])["repo/new/limit"]
    assert (entry.value_type, entry.value) == ("string", b"42")


def test_git_refresh__deleted_file__key_gone_with_a_delete_record(harness, repos):
    repos.other.change({"motd.txt": None})

    harness.store.refresh()

    assert "repo/motd.txt" not in harness.store.get_many(None)
    assert SettingChange.objects.filter(key="repo/motd.txt", action="delete", store="repo").exists()


def test_git_refresh__no_new_commit__nothing_changes(harness):
    revision = harness.store.current_revision()

    assert harness.store.refresh() == 0
    assert harness.store.current_revision() == revision


def test_git_refresh__binary_and_text_files__bytes_and_string(tmp_path):
    repos = make_repos(tmp_path, {"logo.png": b"\x89PNG\r\n\x1a\n\x00", "notes.md": "héllo\n".encode()})
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())

    store.refresh()

    entries = store.get_many(None)
    assert (entries["repo/logo.png"].value_type, entries["repo/logo.png"].value) == ("bytes", b"\x89PNG\r\n\x1a\n\x00")
    assert (entries["repo/notes.md"].value_type, entries["repo/notes.md"].value) == ("string", "héllo\n".encode())


def test_git_refresh__yaml_and_toml_files__served_as_json(tmp_path):
    files = {
        "app.yaml": b"# comment\nname: svc\nports: [80, 443]\nsince: 2024-01-02\nnested: {enabled: yes}\n",
        "short.yml": b"- a\n- b\n",
        "db.toml": b'[db]\nhost = "localhost"\nport = 5432\nsince = 2024-01-02\n',
    }
    repos = make_repos(tmp_path, files)
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())

    store.refresh()

    entries = store.get_many(None)
    assert {key: entry.value_type for key, entry in entries.items()} == dict.fromkeys(
        ["repo/app.yaml", "repo/db.toml", "repo/short.yml"], "json"
    )
    assert json.loads(entries["repo/app.yaml"].value) == {
        "name": "svc",
        "ports": [80, 443],
        "since": "2024-01-02",
        "nested": {"enabled": True},  # PyYAML reads YAML 1.1: yes/no/on/off are booleans
    }
    assert json.loads(entries["repo/short.yml"].value) == ["a", "b"]
    assert json.loads(entries["repo/db.toml"].value) == {
        "db": {"host": "localhost", "port": 5432, "since": "2024-01-02"}
    }


def test_git_refresh__file_no_longer_parses__last_valid_value_kept(tmp_path):
    repos = make_repos(tmp_path, {"app.yaml": b"a: 1\n", "db.toml": b"a = 1\n", "flags.json": b"[1]"})
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())
    store.refresh()
    repos.other.change({"app.yaml": b"a: [1\n", "db.toml": b"a = \n", "flags.json": b"[1"})

    assert store.refresh() == 0

    assert {key: entry.value for key, entry in store.get_many(None).items()} == {
        "repo/app.yaml": b'{"a":1}',
        "repo/db.toml": b'{"a":1}',
        "repo/flags.json": b"[1]",
    }


def test_git_refresh__yaml_aliases_expanding_past_the_size_limit__skipped(tmp_path):
    laughs = b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for name, previous in zip("bcdefghi", "abcdefgh", strict=True):
        laughs += f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n".encode()
    repos = make_repos(tmp_path, {"bomb.yaml": laughs, "ok.txt": b"fine"})
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())

    store.refresh()

    assert list(store.get_many(None)) == ["repo/ok.txt"]


def test_git_refresh__file_over_the_value_size_limit__skipped_and_last_valid_value_kept(tmp_path):
    repos = make_repos(tmp_path, {"small.txt": b"tiny", "big.txt": b"x" * 50})
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())
    with override_settings(DATASTREAM={"MAX_VALUE_BYTES": 20}):
        store.refresh()
        repos.other.change({"small.txt": b"y" * 30})
        store.refresh()

        assert {key: entry.value for key, entry in store.get_many(None).items()} == {"repo/small.txt": b"tiny"}


def test_git_refresh__path_prefix__only_files_under_it_relative_to_it(tmp_path):
    files = {"conf/a.txt": b"a", "conf/sub/b.json": b"[2]", "other/c.txt": b"c", "top.txt": b"t", "confx/d.txt": b"d"}
    repos = make_repos(tmp_path, files)
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options(path_prefix="/conf/"))

    store.refresh()

    assert {key: entry.value for key, entry in store.get_many(None).items()} == {
        "repo/a.txt": b"a",
        "repo/sub/b.json": b"[2]",
    }
    store.put("repo/a.txt", value_type="string", decode=wire(b"changed"))
    assert git(repos.remote, "show", "main:conf/a.txt") == "changed"


def test_git_refresh__path_prefix_missing__unavailable_and_keys_kept(tmp_path):
    repos = make_repos(tmp_path, {"conf/a.txt": b"a"})
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options(path_prefix="conf"))
    store.refresh()
    repos.other.change({"conf/a.txt": None, "elsewhere.txt": b"e"})

    with pytest.raises(Unavailable, match="path_prefix"):
        store.refresh()

    assert list(MirroredEntry.objects.filter(store="repo").values_list("key", flat=True)) == ["repo/a.txt"]


def test_git_refresh__branch_missing_at_the_remote__unavailable(repos):
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options(branch="nope"))

    with pytest.raises(Unavailable, match="repo"):
        store.refresh()


def test_git_refresh__branch_option_changed__same_working_copy_serves_the_new_branch(harness, repos):
    repos.other.pull()
    git(repos.other.path, "checkout", "-q", "-b", "dev")
    repos.other.write("motd.txt", b"from dev")
    repos.other.commit()
    git(repos.other.path, "push", "-q", "origin", "dev")
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options(branch="dev"))

    store.refresh()

    assert value(store, "repo/motd.txt") == b"from dev"
    assert git(repos.workdir, "symbolic-ref", "--short", "HEAD") == "dev"
    assert (repos.workdir / "motd.txt").read_bytes() == b"from dev"


def test_git_refresh__invalid_key_names__skipped(tmp_path):
    repos = make_repos(tmp_path, {"has space.txt": b"x", "ok.txt": b"fine"})
    store = GitStore(alias="repo", prefix=PREFIX, **repos.options())

    store.refresh()

    assert list(store.get_many(None)) == ["repo/ok.txt"]


def test_git_refresh__remote_with_credentials_unreachable__error_does_not_show_them(tmp_path):
    store = GitStore(
        alias="repo",
        prefix=PREFIX,
        remote="http://user:hunter2@127.0.0.1:9/nothing.git",
        workdir=str(tmp_path / "work"),
        timeout=20,
    )

    with pytest.raises(Unavailable, match="repo") as raised:
        store.refresh()

    assert "hunter2" not in raised.value.message
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [({}, "remote"), ({"path_prefix": "../up"}, "path_prefix"), ({"branch": "two words"}, "branch")],
)
def test_git_store__bad_options__improperly_configured(tmp_path, options, message):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=message):
        GitStore(alias="repo", prefix=PREFIX, **({"remote": str(tmp_path)} if options else {}), **options)


# Failure isolation


def test_git_refresh__remote_unreachable__only_its_keys_unavailable_until_it_is_back(harness, repos):
    Setting.objects.create(key="max_connections", value_type="int", value=b"10")
    moved = repos.remote.with_name("moved.git")
    repos.remote.rename(moved)

    with override_settings(DATASTREAM={"STORES": {"default": MODEL_STORE, "repo": repos.config()}}):
        with pytest.raises(Unavailable, match="repo"):
            harness.store.refresh()
        with pytest.raises(Unavailable, match="repo"):
            services.get_entries(keys=["repo/motd.txt"])
        assert services.get_entries(keys=["max_connections"])["max_connections"].value == b"10"

        # Someone pushes to the remote while the service cannot reach it.
        repos.other.write("motd.txt", b"while away")
        repos.other.commit()
        repos.other.push(str(moved))
        moved.rename(repos.remote)
        harness.store.refresh()
        assert services.get_entries(keys=["repo/motd.txt"])["repo/motd.txt"].value == b"while away"


def test_git_put__remote_unreachable__unavailable_and_nothing_changes(harness, repos):
    repos.remote.rename(repos.remote.with_name("moved.git"))
    revision = harness.store.current_revision()

    with pytest.raises(Unavailable, match="repo"):
        harness.store.put("repo/motd.txt", value_type="string", decode=wire(b"bye"))

    assert harness.store.current_revision() == revision
    assert (repos.workdir / "motd.txt").read_bytes() == b"hello"


# Webhook


def webhook(alias: str, authorization: str | None) -> Any:
    client = APIClient()
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    return client.post(f"/api/v1/stores/{alias}/refresh", **headers)


@pytest.fixture
def webhook_stores(repos: Repos) -> Iterator[None]:
    stores = {
        "default": MODEL_STORE,
        "repo": repos.config(webhook_secret=SECRET),
        "quiet": {**repos.config(), "PREFIX": "quiet/"},
    }
    with override_settings(DATASTREAM={"STORES": stores}):
        yield


def test_webhook__right_secret__202_refresh_requested(webhook_stores):
    response = webhook("repo", f"Bearer {SECRET}")

    assert response.status_code == 202
    assert response.json() == {"store": "repo", "refresh": "requested"}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {SECRET}", "Bearer", f"Bearer {SECRET}x"])
def test_webhook__missing_or_wrong_secret__401(webhook_stores, authorization):
    response = webhook("repo", authorization)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_webhook__unknown_store__404(webhook_stores):
    response = webhook("nosuchstore", f"Bearer {SECRET}")

    assert response.status_code == 404


def test_webhook__store_without_a_secret__404_webhook_disabled(webhook_stores):
    response = webhook("quiet", f"Bearer {SECRET}")

    assert response.status_code == 404
    assert response.json()["detail"] == "webhook disabled"


def test_webhook__get__405(webhook_stores):
    assert APIClient().get("/api/v1/stores/repo/refresh").status_code == 405


def checked_at() -> Any:
    """When the git store was last listed (the watcher's poll, a webhook, refreshstores)."""
    status = StoreStatus.objects.filter(alias="repo").first()
    return status.checked_at if status else None


async def test_webhook__pushed_change__reaches_a_subscriber_with_no_poll_between(repos, monkeypatch):
    from protos import datastream_pb2

    # An hour between polls: after the watcher's first listing, nothing but the
    # webhook lists the repository again during this test. The wait between
    # polls is made interruptible, so the service stops without sleeping it out.
    released = threading.Event()
    monkeypatch.setattr(GitStore, "wait", lambda self, timeout: released.wait(timeout))
    stores = {"default": MODEL_STORE, "repo": repos.config(webhook_secret=SECRET, poll_interval=3600.0)}
    # Cloned and read once before the service starts, so subscribing does not race the first clone.
    await sync_to_async(GitStore(alias="repo", prefix=PREFIX, **repos.options()).refresh, thread_sensitive=False)()
    before = await sync_to_async(checked_at)()
    try:
        async with serving(DATASTREAM={"STORES": stores}) as (_, stub):
            # The watcher's first listing; the next poll is an hour after it.
            await eventually(lambda: sync_to_async(lambda: checked_at() != before)())
            call = stub.Subscribe(datastream_pb2.DataRequest(keys=["repo/motd.txt"]))
            first = await asyncio.wait_for(call.read(), 10)
            await sync_to_async(repos.other.change, thread_sensitive=False)({"motd.txt": b"hooked"})
            response = await sync_to_async(webhook, thread_sensitive=False)("repo", f"Bearer {SECRET}")
            update = await asyncio.wait_for(call.read(), 30)
            call.cancel()
    finally:
        released.set()

    assert first.data["repo/motd.txt"].value == b"hello"
    assert response.status_code == 202
    assert update.data["repo/motd.txt"].value == b"hooked"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Await ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# refreshstores


def test_refreshstores__now__refreshes_here_and_prints_how_many_keys_changed(harness, repos):
    repos.other.change({"motd.txt": b"via command", "README": b"also"})
    out = io.StringIO()

    with override_settings(DATASTREAM={"STORES": {"default": MODEL_STORE, "repo": repos.config()}}):
        call_command("refreshstores", "repo", "--now", stdout=out)

    assert out.getvalue().strip() == "repo: 2 keys changed"
    assert value(harness.store, "repo/motd.txt") == b"via command"


def test_refreshstores__now_while_another_process_holds_the_lease__error_and_nothing_read(harness, repos):
    repos.other.change({"motd.txt": b"not yet"})
    assert harness.store.acquire_lease(holder="elsewhere:1")
    err = io.StringIO()

    stores = {"default": MODEL_STORE, "repo": repos.config()}
    with override_settings(DATASTREAM={"STORES": stores}), pytest.raises(CommandError, match="repo"):
        call_command("refreshstores", "--now", stdout=io.StringIO(), stderr=err)

    assert "lease" in err.getvalue()
    assert value(harness.store, "repo/motd.txt") == b"hello"


def test_refreshstores__unknown_or_internal_store__error(repos):
    with override_settings(DATASTREAM={"STORES": {"default": MODEL_STORE, "repo": repos.config()}}):
        with pytest.raises(CommandError, match="not configured"):
            call_command("refreshstores", "nosuch")
        with pytest.raises(CommandError, match="not an external store"):
            call_command("refreshstores", "default")


def test_refreshstores__without_now__requests_a_refresh_and_warns_about_the_in_memory_layer(repos):
    out, err = io.StringIO(), io.StringIO()

    in_memory = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(
        DATASTREAM={"STORES": {"default": MODEL_STORE, "repo": repos.config()}}, CHANNEL_LAYERS=in_memory
    ):
        call_command("refreshstores", stdout=out, stderr=err)

    assert out.getvalue().strip() == "repo: refresh requested"
    assert "in-memory" in err.getvalue()
