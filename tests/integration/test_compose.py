"""docker-compose.yml cannot run here (no container engine): check it against what the service reads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def variables_read_by_settings() -> set[str]:
    source = (ROOT / "settings_service" / "settings.py").read_text()
    return set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', source))


def test_compose__services__the_production_topology_with_healthchecks():
    services = compose()["services"]

    assert {"postgres", "redis", "minio", "migrate", "web", "grpc"} <= set(services)
    for name in ("postgres", "redis", "minio", "web", "grpc"):
        assert "healthcheck" in services[name], name


def test_compose__app_environment__every_variable_is_read_by_the_settings():
    services = compose()["services"]
    known = variables_read_by_settings()

    for name in ("migrate", "web", "grpc"):
        environment = services[name]["environment"]
        assert set(environment) <= known, f"{name}: {set(environment) - known} are not read by settings.py"
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["REDIS_URL"].startswith("redis://")
        assert environment["SECRET_KEY"]


def test_compose__commands__exist_in_this_project():
    services = compose()["services"]
    commands = {p.stem for p in (ROOT / "datastream_app" / "management" / "commands").glob("*.py")}

    assert services["grpc"]["command"][:3] == ["python", "manage.py", "grpcrunserver"]
    assert "grpcrunserver" in commands
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    web = services["web"]["command"]
    assert web[0] == "uvicorn"
    module, _, attribute = web[1].partition(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert attribute == "application"


def test_compose__grpc__scalable_without_fixed_host_port_clash():
    grpc_service = compose()["services"]["grpc"]

    assert "container_name" not in grpc_service
    (mapping,) = grpc_service["ports"]
    assert re.fullmatch(r"\d+-\d+:50051", mapping)


def test_dockerfile__copies_what_the_service_imports():
    dockerfile = (ROOT / "Dockerfile").read_text()

    for path in ("requirements.txt", "manage.py", "settings_service", "datastream_app", "protos", "templates"):
        assert re.search(rf"^COPY {re.escape(path)}\b", dockerfile, re.MULTILINE), path
