"""docker-compose.yml and the Dockerfiles, checked with a real compose parser (no Docker engine needed)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from compose_file import COMPOSE, ROOT, SECRET_VALUES, SECRETS, compose_config, parsed_config

FARM_IMAGES = ("surreal-farm-app", "surreal-farm-worker")  # run farm commands through docker/entrypoint.sh
OWN_IMAGES = (*FARM_IMAGES, "surreal-farm-seaweedfs")  # built from docker/
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|AUTH|TOKEN", re.I)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict[str, Any]:
    return parsed_config(tmp_path_factory.mktemp("compose"))


def farm_cli() -> Any:
    import typer.main

    from farm.cli.main import app

    return typer.main.get_command(app)


def farm_command_problem(argv: list[str]) -> str | None:
    """Why `farm <argv>` would not parse as a command with those options, or None when it does."""
    command = farm_cli()
    words = list(argv)
    path = []
    while words and hasattr(command, "commands") and not words[0].startswith("-"):
        name = words.pop(0)
        found = command.get_command(typer.Context(command), name)  # imports one that `farm` imports lazily
        if found is None:
            return f"`farm {' '.join(path + [name])}` is not a farm command"
        command = found
        path.append(name)
    options = {opt for p in command.params for opt in p.opts + p.secondary_opts}
    for word in words:
        if word.startswith("-") and word.split("=")[0] not in options:
            return f"`farm {' '.join(path)}` has no option {word}"
    return None


def test_compose_file_parses_and_every_secret_is_required():
    result = compose_config(None)  # no cluster.env: every secret is missing
    assert result.returncode != 0
    assert "set it in cluster.env" in result.stderr


def test_every_service_command_exists(config):
    problems = []
    for name, service in config["services"].items():
        if not service["image"].startswith(FARM_IMAGES):
            continue
        argv = [str(a) for a in service["command"]]
        if shutil.which(argv[0]) is None and argv[0] not in ("celery", "farm"):
            problem = farm_command_problem(argv)  # the entrypoint runs these as `farm <argv>`
            if problem:
                problems.append(f"{name}: {problem}")
        elif argv[0] == "celery":
            assert argv[1] == "flower"
    assert not problems, problems
    commands = {s["command"][0] for s in config["services"].values() if s["image"].startswith(FARM_IMAGES)}
    assert {"db", "reconcile", "bookkeeper", "worker", "celery"} <= commands


def test_images_build_from_files_that_exist_and_are_pinned(config):
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for name, service in config["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image} to a version"
        if not image.startswith(OWN_IMAGES):
            continue
        dockerfile = Path(service["build"]["context"]) / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        text = dockerfile.read_text()
        for base in re.findall(r"^FROM\s+(\S+)", text, re.M):
            assert re.search(r":\d", base), f"{dockerfile.name}: pin the base image {base} to a version"
        for sources in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", text, re.M):
            for source in sources.split():
                assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
                assert source not in ignored, f"{dockerfile.name} copies {source}, which .dockerignore drops"
        assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.M), f"{dockerfile.name} must not run as root"
        if image.startswith(FARM_IMAGES):
            assert 'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]' in text
            assert "python:3.11" in text
    assert (ROOT / "docker" / "entrypoint.sh").read_text().rstrip().endswith('exec "$@"')
    for name, service in config["services"].items():  # bind mounts of this checkout's files
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(str(ROOT)) and not source.startswith(str(ROOT / "data")):
                assert Path(source).is_file(), f"{name} mounts {source}, which does not exist"


def test_healthchecks_and_dependency_conditions(config):
    services = config["services"]
    for name in ("postgres", "redis", "seaweedfs", "bookkeeper", "flower"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, service in services.items():
        for dep, how in service.get("depends_on", {}).items():
            condition = how["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (name, dep)
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep}'s health, which has no check"
                )
    for name in ("reconciler", "bookkeeper", "worker", "worker-cpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["restart"] == "no"
    redis = " ".join(services["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis and "--appendonly yes" in redis
    assert any(":/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])
    assert services["seaweedfs"]["environment"]["S3_BUCKET"] == "surreal"  # created by docker/service.sh


def test_workers_reserve_gpus_and_have_time_to_finish_a_clip(config):
    worker = config["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["environment"]["FARM_GPU_LOCKS"]  # one GPU per container, taken by the entrypoint
    assert (
        "--device" in worker["command"]
        and worker["command"][worker["command"].index("--device") + 1] == "optix"
    )
    cpu = config["services"]["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    for service in (worker, cpu):
        minutes = int(re.fullmatch(r"(\d+)m", service["stop_grace_period"]).group(1))
        assert minutes >= 5
        assert service["init"] is True
    assert config["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]


def test_no_literal_secret_in_the_compose_file():
    raw = yaml.safe_load(COMPOSE.read_text())
    text = COMPOSE.read_text()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if SECRET_NAME.search(str(key)) and isinstance(value, str):
                    assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{where}.{key} is not ${{VAR:?...}}"
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(raw, "compose")
    # A secret has no default: compose refuses to start without it in cluster.env.
    for name, how in re.findall(r"\$\{(\w+)([^}]*)\}", text):
        if SECRET_NAME.search(name):
            assert how.startswith(":?"), f"${{{name}{how}}}: a secret must be required (${{{name}:?...}})"
    # Credentials inside URLs come from the environment too.
    for userinfo in re.findall(r"://([^@/\s]*)@", text):
        password = userinfo.partition(":")[2]
        assert password.startswith("${"), f"a URL in docker-compose.yml holds a literal password: {userinfo}"
    example = (ROOT / "cluster.env.example").read_text()
    for key in SECRETS:
        assert re.search(rf"^{key}=$", example, re.M), (
            f"cluster.env.example must name {key} and leave it empty"
        )


def command_lines(service: dict[str, Any]) -> list[list[str]]:
    """What the container runs as argv: entrypoint, command and healthcheck (a CMD-SHELL string split)."""
    lines = []
    for what in (
        service.get("entrypoint"),
        service.get("command"),
        service.get("healthcheck", {}).get("test"),
    ):
        if isinstance(what, str):
            what = ["CMD-SHELL", what]
        if what and what[0] == "CMD-SHELL":
            what = shlex.split(" ".join(what[1:]))
        lines.append([str(word) for word in what or []])
    return lines


def test_no_secret_on_any_command_line(config):
    raw = yaml.safe_load(COMPOSE.read_text())
    flags = {"-a", "-u", "--pass", "--password", "-password", "--requirepass", "--masterauth", "--user"}
    for name, service in raw["services"].items():
        for argv in command_lines(service):
            for word in argv:
                for variable in re.findall(r"\$+\{?(\w+)", word):
                    assert not SECRET_NAME.search(variable), (
                        f"{name} puts ${variable} on a command line: {argv}"
                    )
                assert word.split("=")[0] not in flags, f"{name} passes {word} on a command line: {argv}"

    # After interpolation, the secrets appear only in `environment`, which no command line shows.
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key != "environment":
                    walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        else:
            for key, secret in SECRET_VALUES.items():
                assert secret not in str(node), f"{where} holds {key}"

    walk(config, "compose")


PORT = re.compile(r"\$\{(?P<addr>\w+):-127\.0\.0\.1\}:\$\{\w+:-\d+\}:\d+")


def test_every_published_port_binds_to_an_address_that_defaults_to_127_0_0_1(config, tmp_path):
    raw = yaml.safe_load(COMPOSE.read_text())
    published = {name: s["ports"] for name, s in raw["services"].items() if s.get("ports")}
    services = {"postgres", "redis", "seaweedfs", "bookkeeper", "flower", "grafana", "prometheus"}
    assert services <= set(published)
    address_of = {}
    for name, ports in published.items():
        for port in ports:
            match = PORT.fullmatch(str(port))
            assert match, f"{name} publishes {port}: give it ${{FARM_..._ADDR:-127.0.0.1}}:${{..._PORT:-N}}:N"
            address_of[name] = match["addr"]
    # The worker hosts need PostgreSQL, Redis and S3; people need the dashboards: each has its own address.
    assert {address_of[n] for n in ("postgres", "redis", "seaweedfs")} == {"FARM_PUBLISH_ADDR"}
    assert {address_of[n] for n in ("bookkeeper", "flower", "grafana")} == {"FARM_DASHBOARD_ADDR"}
    assert address_of["prometheus"] == "FARM_PROMETHEUS_ADDR"  # no login: opened only on purpose

    for service in config["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
    opened = parsed_config(tmp_path, FARM_PUBLISH_ADDR="10.1.2.3")["services"]
    for name in ("postgres", "redis", "seaweedfs"):
        assert [str(p).split(":")[0] for p in opened[name]["ports"]] == ["10.1.2.3"]
    for name in ("bookkeeper", "flower", "grafana", "prometheus"):
        assert [str(p).split(":")[0] for p in opened[name]["ports"]] == ["127.0.0.1"]
    example = (ROOT / "cluster.env.example").read_text()
    for variable in ("FARM_PUBLISH_ADDR", "FARM_DASHBOARD_ADDR", "FARM_PROMETHEUS_ADDR"):
        assert re.search(rf"^{variable}=127\.0\.0\.1$", example, re.M)


def test_the_worker_image_makes_the_gpu_lock_folder_for_its_user(config):
    worker = config["services"]["worker"]
    folder = worker["environment"]["FARM_GPU_LOCKS"]
    assert any(
        v.split(":")[1] == folder for v in worker["volumes"] if not v.startswith("/")
    )  # a named volume
    text = (ROOT / "docker" / "worker.Dockerfile").read_text()
    user = re.search(r"useradd .*--uid 10001 (\w+)", text)
    assert user and re.search(rf"^USER {user[1]}$", text, re.M)
    # Docker gives a new named volume the owner of the image's folder: the worker's user, not root.
    assert re.search(rf"install -d -o {user[1]} -g {user[1]} {re.escape(folder)}\b", text)
