"""`python -m datastream_client` against a real in-process server: every subcommand and exit code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from protos import datastream_pb2
from tests.client.servers import ROOT, free_port
from tests.conftest import serving

pytestmark = pytest.mark.django_db(transaction=True)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASTREAM_")}
    env.update(extra)
    return env


async def cli(port: int | None, *args: str, **env: str) -> tuple[int, str, str]:
    """Run the CLI (``--target`` to ``port`` unless None); its exit code, stdout and stderr."""
    target = ["--target", f"127.0.0.1:{port}"] if port is not None else []
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "datastream_client",
        *target,
        *args,
        cwd=ROOT,
        env=cli_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ls__keys_with_types__prefix_filters(demo):
    async with serving() as (service, _):
        code, out, _ = await cli(service.port, "ls")
        assert code == 0
        assert out.splitlines() == [
            "blob\tbytes",
            "debug_enabled\tbool",
            "greeting\tstring",
            "limits\tjson",
            "max_connections\tint",
            "rate_limit\tint",
            "ratio\tfloat",
        ]
        assert (await cli(service.port, "ls", "ra"))[1].splitlines() == ["rate_limit\tint", "ratio\tfloat"]


async def test_get__one_key_prints_just_the_value__several_and_json(demo):
    async with serving() as (service, _):
        assert await cli(service.port, "get", "max_connections") == (0, "10\n", "")
        assert (await cli(service.port, "get", "limits"))[1] == '{"a":1}\n'
        assert (await cli(service.port, "get", "blob"))[1] == "AAH/\n"
        code, out, _ = await cli(service.port, "get", "max_connections", "greeting", "debug_enabled")
        assert (code, out) == (0, "max_connections\t10\ngreeting\thello\ndebug_enabled\tfalse\n")
        assert json.loads((await cli(service.port, "get", "ratio", "--json"))[1]) == 0.5
        code, out, _ = await cli(service.port, "get", "--json", "limits", "blob", "debug_enabled")
        assert json.loads(out) == {"limits": {"a": 1}, "blob": "AAH/", "debug_enabled": False}


async def test_get__unknown_key__exit_1_with_status_and_reason(demo):
    async with serving() as (service, _):
        assert await cli(service.port, "get", "nope") == (1, "", "NOT_FOUND: unknown key: nope\n")


async def test_set__prints_the_new_revision__refusals_exit_1(demo):
    async with serving() as (service, stub):
        code, out, err = await cli(service.port, "set", "max_connections", "20")
        assert (code, err) == (0, "")
        synced = await stub.Sync(datastream_pb2.DataRequest(keys=["max_connections"]))
        assert synced.data["max_connections"].value == b"20"
        assert int(out) == synced.data["max_connections"].revision

        assert (await cli(service.port, "set", "limits", '{"b": [1, 2]}'))[0] == 0
        assert (await cli(service.port, "set", "blob", "/wA=", "--type", "bytes"))[0] == 0
        synced = await stub.Sync(datastream_pb2.DataRequest(keys=["limits", "blob"]))
        assert (synced.data["limits"].value, synced.data["blob"].value) == (b'{"b":[1,2]}', b"\xff\x00")

        assert await cli(service.port, "set", "max_connections", "ten") == (
            1,
            "",
            "INVALID_ARGUMENT: 'ten' is not an integer\n",
        )
        code, _, err = await cli(service.port, "set", "max_connections", "5", "--type", "string")
        assert (code, err.split(":")[0]) == (1, "INVALID_ARGUMENT")
        assert await cli(service.port, "set", "nope", "1") == (1, "", "NOT_FOUND: unknown key 'nope'\n")
        code, _, err = await cli(service.port, "set", "max_connections", "5", "--expect-revision", "3")
        assert (code, err.split(":")[0]) == (1, "UNIMPLEMENTED")
        synced = await stub.Sync(datastream_pb2.DataRequest(keys=["max_connections"]))
        assert synced.data["max_connections"].value == b"20"


async def test_usage_unreachable_and_environment(demo):
    async with serving() as (service, _):
        assert (await cli(service.port))[0] == 2
        assert (await cli(service.port, "frobnicate"))[0] == 2
        assert (await cli(service.port, "set", "only_a_key"))[0] == 2
        code, _, err = await cli(None, "get", "x", DATASTREAM_TARGET=f"127.0.0.1:{free_port()}")
        assert code == 3
        assert err.startswith("UNAVAILABLE: ")
        # DATASTREAM_TARGET names the server; DATASTREAM_TOKEN the token.
        assert await cli(None, "get", "rate_limit", DATASTREAM_TARGET=f"127.0.0.1:{service.port}") == (0, "1000\n", "")
        code, _, err = await cli(None, "ls", DATASTREAM_TARGET=f"127.0.0.1:{service.port}", DATASTREAM_TOKEN="ds_x_y")
        assert (code, err.split(":")[0]) == (1, "UNAUTHENTICATED")


async def test_watch__json_lines_parse__current_values_then_each_change(demo):
    async with serving() as (service, stub):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "datastream_client",
            "--target",
            f"127.0.0.1:{service.port}",
            "watch",
            "--json",
            "max_connections",
            "blob",
            cwd=ROOT,
            env=cli_env(),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            first = [json.loads(await asyncio.wait_for(process.stdout.readline(), 30)) for _ in range(2)]
            assert sorted((line["key"], line["value"], line["value_type"]) for line in first) == [
                ("blob", "AAH/", "bytes"),
                ("max_connections", 10, "int"),
            ]
            await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"42"))
            change = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
            synced = await stub.Sync(datastream_pb2.DataRequest(keys=["max_connections"]))
            assert change == {
                "key": "max_connections",
                "value": 42,
                "value_type": "int",
                "revision": synced.data["max_connections"].revision,
            }
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_watch__plain_lines__and_unreachable_exit_3(demo):
    async with serving() as (service, _):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "datastream_client",
            "--target",
            f"127.0.0.1:{service.port}",
            "watch",
            "greeting",
            cwd=ROOT,
            env=cli_env(),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert line.startswith("greeting = hello (string) rev ")
    code, _, err = await cli(free_port(), "--timeout", "1", "watch")
    assert code == 3
    assert "UNAVAILABLE" in err
