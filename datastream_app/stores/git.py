"""An external store whose source is a git repository: the files at the head of one branch, one key per file.

The key is the store's PREFIX plus the file's path (with ``path_prefix``
removed). The value type comes from the extension: ``.json`` is json,
``.yaml``/``.yml`` and ``.toml`` are parsed and served as json, any other
file is string when its bytes are UTF-8 and bytes otherwise. Every poll runs
``git fetch`` and reads the tree of ``origin/<branch>``; a write commits the
file on top of the commit that still holds the version read and pushes it.
It drives the git command line, so remotes, credentials and SSH behave
exactly as they do for ``git`` itself. See docs/stores/git.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from datastream_app import codec
from datastream_app.audit import current_actor
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import Aborted, InvalidArgument, InvalidValue, PermissionDenied
from datastream_app.stores.mirrored import MirroredStore, Snapshot

logger = logging.getLogger(__name__)

# Regular and executable files; symlinks (120000) and submodules (160000) are not keys.
FILE_MODES = frozenset({"100644", "100755"})
CONVERTED = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}
# Credentials in a remote URL (https://user:token@host/...) never reach a log or an error message.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class GitError(Exception):
    """A git command failed or timed out; the store reports it as UNAVAILABLE."""


def redact(text: str) -> str:
    """``text`` with any user name and password in URLs replaced by ``***``."""
    return _CREDENTIALS.sub("***@", text)


def _is_utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _jsonable(value: Any, budget: list[int], depth: int = 1) -> Any:
    # Copies a parsed YAML/TOML document into plain JSON values. The node
    # budget bounds YAML aliases ("billion laughs"): each alias is expanded
    # again here, and a document with more nodes than the value limit has
    # bytes could never fit it anyway.
    budget[0] -= 1
    if budget[0] < 0:
        raise InvalidValue("document expands to more nodes than the value size limit allows")
    if depth > codec.JSON_MAX_DEPTH:
        raise InvalidValue(f"document nests deeper than {codec.JSON_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.date, dt.time)):
        # YAML timestamps and TOML dates/times have no JSON form: ISO 8601 text.
        return value.isoformat()
    if isinstance(value, list):
        return [_jsonable(item, budget, depth + 1) for item in value]
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, (dt.date, dt.time)):
                key = key.isoformat()
            elif not isinstance(key, (str, int, float, bool)) and key is not None:
                raise InvalidValue(f"mapping key {key!r} has no JSON form")
            # json.dumps turns 1, 1.5, true and null keys into "1", "1.5", "true", "null".
            result[key] = _jsonable(item, budget, depth + 1)
        return result
    raise InvalidValue(f"{type(value).__name__} value has no JSON form")


def document_to_json(value: Any, limit: int) -> bytes:
    """Compact JSON bytes of a parsed YAML/TOML document; InvalidValue if it has no JSON form or exceeds ``limit``."""
    plain = _jsonable(value, [limit])
    try:
        raw = json.dumps(plain, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidValue(f"no JSON form: {exc}") from None
    if len(raw) > limit:
        raise InvalidValue(f"is {len(raw)} bytes as JSON; the limit is {limit} bytes")
    return raw


def parse_file(path: str, content: bytes, limit: int) -> tuple[str, bytes]:
    """The value type and wire bytes of a file by its extension; InvalidValue if a YAML/TOML file does not parse."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".json":
        # Served as is: the mirror validates it and keeps the last valid value if it is not JSON.
        return codec.ValueType.JSON.value, content
    if suffix in (".yaml", ".yml"):
        try:
            document = yaml.safe_load(content)
        except (yaml.YAMLError, RecursionError) as exc:
            raise InvalidValue(f"not valid YAML: {exc}") from None
        return codec.ValueType.JSON.value, document_to_json(document, limit)
    if suffix == ".toml":
        try:
            document = tomllib.loads(content.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidValue(f"not valid TOML: {exc}") from None
        return codec.ValueType.JSON.value, document_to_json(document, limit)
    if _is_utf8(content):
        return codec.ValueType.STRING.value, content
    return codec.ValueType.BYTES.value, content


def _unusable(etag: str) -> Snapshot:
    # A file that is present but cannot be served (unparsable, too large).
    # Listing it with a value no type accepts makes the mirror keep the last
    # valid value; leaving it out would delete the key.
    return Snapshot(codec.ValueType.JSON.value, b"", etag)


@dataclass(frozen=True, slots=True)
class TreeFile:
    """A file as ``git ls-tree`` lists it."""

    path: str
    mode: str
    blob: str
    size: int


class GitStore(MirroredStore):
    """Serves the files of one branch of a git repository as keys; see the module docstring and docs/stores/git.md."""

    def __init__(
        self,
        *,
        alias: str,
        remote: str = "",
        branch: str = "main",
        workdir: str | os.PathLike[str] | None = None,
        author_name: str = "datastream",
        author_email: str = "datastream@localhost",
        path_prefix: str = "",
        timeout: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(alias=alias, **options)
        where = f'DATASTREAM["STORES"][{alias!r}]["OPTIONS"]'
        if not remote:
            raise ImproperlyConfigured(f'{where} needs "remote" (a URL or a path) for the git store.')
        if not branch or branch.startswith("-") or any(c.isspace() or c in "~^:?*[\\" for c in branch):
            raise ImproperlyConfigured(f'{where}["branch"] = {branch!r} is not a valid branch name.')
        parts = [part for part in str(path_prefix).split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise ImproperlyConfigured(f'{where}["path_prefix"] must be a path inside the repository.')
        self.remote = self._normalize_remote(str(remote))
        self.branch = branch
        # Absolute: git runs with the working copy (or, to clone, its parent) as its directory.
        self.workdir = (Path(workdir).expanduser() if workdir else Path(settings.VAR_DIR) / "stores" / alias).absolute()
        self.author_name = author_name
        self.author_email = author_email
        # "conf" and "/conf/" both mean the directory conf/ at the top of the repository.
        self.path_prefix = "/".join(parts) + "/" if parts else ""
        self.timeout = float(timeout)
        self._git = shutil.which("git") or "git"
        self._tracking = f"refs/remotes/origin/{branch}"
        # The listing of the last head read, and each file's parsed snapshot by
        # (path, blob id): a poll with no new commit reads no blob at all.
        self._head: str | None = None
        self._listing: dict[str, Snapshot] = {}
        self._parsed: dict[tuple[str, str], Snapshot] = {}

    @staticmethod
    def _normalize_remote(remote: str) -> str:
        # A URL (scheme://...) or scp-like address (host:path) is kept; a local
        # path becomes absolute, as git runs in the working copy, not here.
        if "://" in remote or re.match(r"^[^/]+:", remote):
            return remote
        return str(Path(remote).expanduser().resolve())

    # Running git

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        # Never wait for a password prompt; fail instead (the store reports UNAVAILABLE).
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["LC_ALL"] = "C"
        env.pop("GIT_DIR", None)
        env.pop("GIT_WORK_TREE", None)
        env.pop("GIT_INDEX_FILE", None)
        env.update(extra or {})
        return env

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one git command in the working copy; raise GitError if it fails or outlives ``timeout``."""
        command = [self._git, "-c", "core.autocrlf=false", *args]
        # A session of its own, so a timeout also kills the ssh or credential helper git started.
        process = subprocess.Popen(  # noqa: S603 - fixed git arguments, no shell
            command,
            cwd=cwd or self.workdir,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env(env),
            start_new_session=True,
        )
        try:
            out, err = process.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise GitError(f"git {args[0]} timed out after {self.timeout:g}s") from None
        if check and process.returncode != 0:
            detail = err.decode("utf-8", "replace").strip() or out.decode("utf-8", "replace").strip()
            raise GitError(redact(f"git {args[0]} failed: {detail[-800:]}"))
        return subprocess.CompletedProcess(command, process.returncode, out, err)

    def _text(self, *args: str, **kwargs: Any) -> str:
        return self.run(*args, **kwargs).stdout.decode("utf-8", "surrogateescape").strip()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # One git operation sequence at a time on the working copy: the watcher,
        # a write in a request thread and a `refreshstores --now` in another
        # process all use it. flock on a freshly opened file excludes other
        # threads of this process as well as other processes.
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.workdir.with_name(self.workdir.name + ".lock"), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _ensure_clone(self) -> None:
        if (self.workdir / ".git").is_dir():
            url = self.run("config", "--get", "remote.origin.url", check=False).stdout.decode().strip()
            if url != self.remote:
                self.run("remote", "set-url", "origin", self.remote)
            return
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise GitError(f"working copy {self.workdir} exists and is not a git clone; remove it or set workdir")
        # Clone beside the target and rename, so a failed clone leaves nothing half made.
        staging = Path(tempfile.mkdtemp(prefix=f".{self.workdir.name}.clone-", dir=self.workdir.parent))
        try:
            self.run(
                "clone",
                "--quiet",
                "--no-tags",
                "--single-branch",
                "--branch",
                self.branch,
                "--",
                self.remote,
                str(staging),
                cwd=self.workdir.parent,
            )
            if self.workdir.exists():
                self.workdir.rmdir()
            staging.rename(self.workdir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _fetch_remote(self) -> str:
        # An explicit refspec: only the served branch, whatever the clone's config says.
        self.run("fetch", "--quiet", "--no-tags", "origin", f"+refs/heads/{self.branch}:{self._tracking}")
        return self._text("rev-parse", "--verify", f"{self._tracking}^{{commit}}")

    def _sync_checkout(self, commit: str) -> None:
        # The working copy shows what is served, for people looking at it;
        # reads come from git's objects, so a failure here is only logged.
        try:
            head = self.run("rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.decode().strip()
            if head != commit:
                self.run("checkout", "--quiet", "--force", "-B", self.branch, commit)
        except GitError as exc:
            logger.warning("store %s: could not update the working copy: %s", self.alias, exc)

    # Reading

    def _tree_files(self, commit: str) -> list[TreeFile]:
        root = commit
        if self.path_prefix:
            found = self._entry_at(commit, self.path_prefix.rstrip("/"))
            if found is None or found[1] != "tree":
                # Unavailable rather than empty: a typo or a moved directory must not delete every key.
                raise GitError(f"path_prefix {self.path_prefix!r} is not a directory at origin/{self.branch}")
            root = found[2]
        files = []
        for record in self.run("ls-tree", "-r", "-z", "-l", root).stdout.split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, _kind, blob, size = meta.decode("ascii").split()
            if mode not in FILE_MODES:
                continue
            files.append(TreeFile(raw_path.decode("utf-8", "surrogateescape"), mode, blob, int(size)))
        return files

    def _read_blobs(self, blobs: list[str]) -> dict[str, bytes]:
        if not blobs:
            return {}
        out = self.run("cat-file", "--batch", stdin="".join(f"{blob}\n" for blob in blobs).encode()).stdout
        result: dict[str, bytes] = {}
        position = 0
        for blob in blobs:
            end = out.index(b"\n", position)
            header = out[position:end].decode("ascii").split()
            if len(header) != 3:
                raise GitError(f"git cat-file: object {blob} is missing")
            size = int(header[2])
            result[blob] = out[end + 1 : end + 1 + size]
            position = end + 1 + size + 1
        return result

    def _snapshot(self, file: TreeFile, content: bytes, limit: int) -> Snapshot:
        key = self.prefix + file.path
        try:
            value_type, value = parse_file(file.path, content, limit)
        except InvalidValue as exc:
            logger.warning("store %s: %s (%s) skipped, last valid value kept: %s", self.alias, key, file.path, exc)
            return _unusable(file.blob)
        if value is content:
            return Snapshot(value_type, value, file.blob)
        # Converted files: the blob id, plus the converted bytes' hash so a
        # change in how a document converts also reaches subscribers.
        return Snapshot(value_type, value, f"{file.blob}:{hashlib.sha256(value).hexdigest()[:16]}")

    def _list(self, commit: str) -> dict[str, Snapshot]:
        limit = int(datastream_settings.MAX_VALUE_BYTES)
        files = self._tree_files(commit)
        wanted = []
        for file in files:
            if (file.path, file.blob) in self._parsed:
                continue
            if file.size > limit:
                logger.warning(
                    "store %s: %s is %d bytes, over the %d byte limit; skipped, last valid value kept",
                    self.alias,
                    file.path,
                    file.size,
                    limit,
                )
                self._parsed[(file.path, file.blob)] = _unusable(file.blob)
            else:
                wanted.append(file)
        contents = self._read_blobs(sorted({file.blob for file in wanted}))
        for file in wanted:
            self._parsed[(file.path, file.blob)] = self._snapshot(file, contents[file.blob], limit)
        # Keep only what the current tree holds, so the cache stays as large as the repository.
        self._parsed = {(file.path, file.blob): self._parsed[(file.path, file.blob)] for file in files}
        return {self.prefix + file.path: self._parsed[(file.path, file.blob)] for file in files}

    def fetch(self) -> dict[str, Snapshot]:
        """Fetch the branch and list the files of its head; blobs are read only when they changed."""
        with self._locked():
            self._ensure_clone()
            head = self._fetch_remote()
            if head != self._head:
                self._listing = self._list(head)
                self._head = head
            self._sync_checkout(head)
            return dict(self._listing)

    # Writing

    def path_of(self, key: str) -> str:
        """The file path in the repository that serves ``key``."""
        return self.path_prefix + key[len(self.prefix) :]

    def _entry_at(self, commit: str, path: str) -> tuple[str, str, str] | None:
        # (mode, type, object id) of one path; ls-tree takes paths literally, without globbing.
        out = self.run("ls-tree", "-z", "--full-tree", commit, "--", path).stdout
        for record in out.split(b"\0"):
            meta, _, raw_path = record.partition(b"\t")
            if raw_path.decode("utf-8", "surrogateescape") == path:
                mode, kind, oid = meta.decode("ascii").split()
                return mode, kind, oid
        return None

    def _blob_at(self, commit: str, path: str) -> tuple[str, str] | None:
        found = self._entry_at(commit, path)
        return (found[0], found[2]) if found is not None and found[0] in FILE_MODES else None

    def _message(self, key: str, path: str) -> str:
        actor = current_actor()
        lines = [f"datastream: update {key}", "", f"Path: {path}", f"Store: {self.alias}"]
        if actor.name:
            lines.append(f"Changed-by: {actor.name} via {actor.interface}")
        return "\n".join(lines) + "\n"

    def _commit(self, base: str, path: str, mode: str, blob: str, message: str) -> str:
        # The tree is built in an index of its own, from the base commit: the
        # working copy, its index and HEAD are not touched until the push won.
        with tempfile.TemporaryDirectory(prefix="datastream-git-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.run("read-tree", base, env=index)
            self.run("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=index)
            tree = self._text("write-tree", env=index)
        identity = {
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
        }
        return self._text("commit-tree", tree, "-p", base, "-F", "-", stdin=message.encode("utf-8"), env=identity)

    def _push(self, key: str, base: str, commit: str) -> None:
        # No --force: the remote accepts the commit only if its branch still is `base`.
        pushed = self.run("push", "--porcelain", "origin", f"{commit}:refs/heads/{self.branch}", check=False)
        status = [line for line in pushed.stdout.decode("utf-8", "replace").splitlines() if line[:2] in ("*\t", " \t")]
        if pushed.returncode == 0 and status:
            return
        rejected = [line for line in pushed.stdout.decode("utf-8", "replace").splitlines() if line.startswith("!\t")]
        moved = Aborted(f"key {key!r} changed in store {self.alias!r} meanwhile; read it again and retry")
        if not rejected:
            detail = pushed.stderr.decode("utf-8", "replace").strip()
            raise GitError(redact(f"git push failed: {detail[-800:]}"))
        reason = rejected[0].split("\t")[-1]
        if reason.startswith("[rejected]"):
            raise moved  # non-fast-forward or fetch first: another commit came first
        # "[remote rejected]": a hook or permission refused it, or a concurrent
        # push won the ref lock. Ask the remote (without changing anything
        # here) whether its branch moved on.
        listed = self._text("ls-remote", "origin", f"refs/heads/{self.branch}").split()
        if listed and listed[0] != base:
            raise moved
        raise PermissionDenied(f"the remote of store {self.alias!r} refused the commit for {key!r}: {redact(reason)}")

    def write(self, key: str, value: bytes, value_type: str, expected_etag: str) -> Snapshot:
        """Commit the file on top of the head that still holds ``expected_etag`` and push it; Aborted if it moved on."""
        path = self.path_of(key)
        converted = CONVERTED.get(PurePosixPath(path).suffix.lower())
        if converted:
            # Writing JSON back as YAML/TOML would drop comments, order and style.
            raise InvalidArgument(
                f"key {key!r} is read from the {converted} file {path!r} and cannot be written back faithfully;"
                " commit the change to the repository"
            )
        if value_type == codec.ValueType.BYTES.value and _is_utf8(value):
            raise InvalidValue(
                f"key {key!r} is bytes but the new value is valid UTF-8 text, which the git store serves as string"
            )
        with self._locked():
            self._ensure_clone()
            base = self._fetch_remote()
            current = self._blob_at(base, path)
            if current is None or current[1] != expected_etag.split(":")[0]:
                raise Aborted(f"key {key!r} changed in store {self.alias!r} meanwhile; read it again and retry")
            mode, old_blob = current
            blob = self._text("hash-object", "-w", "--stdin", stdin=value)
            if blob != old_blob:
                commit = self._commit(base, path, mode, blob, self._message(key, path))
                self._push(key, base, commit)
                # The remote holds it now: move the tracking branch and the working copy along.
                self.run("update-ref", self._tracking, commit)
                self._sync_checkout(commit)
            snapshot = Snapshot(*parse_file(path, value, len(value)), blob)
            self._parsed[(path[len(self.path_prefix) :], blob)] = snapshot
            return snapshot
