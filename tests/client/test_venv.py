"""The client installed alone: a fresh virtualenv, `pip install` of the client directory, no Django, a live server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from protos import datastream_pb2
from tests.client.servers import ROOT
from tests.conftest import serving

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("django") is None, "django is installed"
import datastream_client
from datastream_client import Client, InvalidValue
assert "/site-packages/" in datastream_client.__file__, datastream_client.__file__
with Client(sys.argv[1], keys=["max_connections", "limits", "blob"], client_name="venv-test") as client:
    before = {"max_connections": client.get("max_connections"), "limits": client["limits"]}
    blob = client.get("blob")
    revision = client.set("max_connections", 33)
    try:
        client.set("max_connections", "ten")
        refused = None
    except InvalidValue as exc:
        refused = exc.message
    print(json.dumps({"before": before, "blob": list(blob), "after": client.get("max_connections"),
                      "revision": revision, "status": str(client.status.state), "refused": refused,
                      "django": "django" in sys.modules}))
"""


async def run(*argv: str | Path, cwd: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")}
    process = await asyncio.create_subprocess_exec(
        *map(str, argv), cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, out.decode(errors="replace")
    return out.decode()


@pytest.mark.timeout(600)
async def test_fresh_venv__client_installed_alone__works_against_a_live_server(demo, tmp_path):
    # A copy, so the build leaves nothing in the repository's tree.
    source = tmp_path / "datastream_client"
    shutil.copytree(
        ROOT / "datastream_client", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = tmp_path / "venv"
    await run(sys.executable, "-m", "venv", venv, cwd=tmp_path, timeout=120)
    python = venv / "bin" / "python"
    await run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", source, cwd=tmp_path, timeout=480
    )
    elsewhere = tmp_path / "elsewhere"  # a working directory without the source copy in it
    elsewhere.mkdir()
    async with serving() as (service, stub):
        target = f"127.0.0.1:{service.port}"
        result = json.loads((await run(python, "-c", SCRIPT, target, cwd=elsewhere, timeout=60)).splitlines()[-1])
        synced = await stub.Sync(datastream_pb2.DataRequest(keys=["max_connections"]))
        assert result == {
            "before": {"max_connections": 10, "limits": {"a": 1}},
            "blob": [0, 1, 255],
            "after": 33,
            "revision": synced.data["max_connections"].revision,
            "status": "live",
            "refused": "'ten' is not an integer",
            "django": False,
        }
        # The console script the package installs.
        assert (
            await run(
                venv / "bin" / "datastream", "--target", target, "get", "max_connections", cwd=elsewhere, timeout=60
            )
            == "33\n"
        )
