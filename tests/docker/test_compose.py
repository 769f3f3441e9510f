"""docker-compose.yml and the Dockerfiles, checked with a real compose parser (no Docker engine needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {  # stand-ins for .env; each must reach the services only through ${...}
    "POSTGRES_PASSWORD": "pgSecret123",
    "REDIS_PASSWORD": "redisSecret456",
    "S3_ACCESS_KEY": "s3Key789",
    "S3_SECRET_KEY": "s3Secret012",
    "FLOWER_BASIC_AUTH": "admin:flowerSecret345",
}
OWN_IMAGES = ("surreal-farm-app", "surreal-farm-worker")


def compose_config(env_file: Path | None) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` (Debian's docker-compose 1.29: parses and interpolates without an engine)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        service_missing("docker-compose", FileNotFoundError("docker-compose (run `make system-deps`)"))
    args = [str(binary), "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    return subprocess.run([*args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict[str, Any]:
    env = tmp_path_factory.mktemp("compose") / "test.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    result = compose_config(env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


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
        if name not in command.commands:
            return f"`farm {' '.join(path + [name])}` is not a farm command"
        command = command.commands[name]
        path.append(name)
    options = {opt for p in command.params for opt in p.opts + p.secondary_opts}
    for word in words:
        if word.startswith("-") and word.split("=")[0] not in options:
            return f"`farm {' '.join(path)}` has no option {word}"
    return None


def test_compose_file_parses_and_every_secret_is_required():
    result = compose_config(None)  # no .env: every secret is missing
    assert result.returncode != 0
    assert "set it in .env" in result.stderr


def test_every_service_command_exists(config):
    problems = []
    for name, service in config["services"].items():
        if not service["image"].startswith(OWN_IMAGES):
            continue
        argv = [str(a) for a in service["command"]]
        if shutil.which(argv[0]) is None and argv[0] not in ("celery", "farm"):
            problem = farm_command_problem(argv)  # the entrypoint runs these as `farm <argv>`
            if problem:
                problems.append(f"{name}: {problem}")
        elif argv[0] == "celery":
            assert argv[1] == "flower"
    assert not problems, problems
    commands = {s["command"][0] for s in config["services"].values() if s["image"].startswith(OWN_IMAGES)}
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
        assert 'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]' in text
        assert "python:3.11" in text
    assert (ROOT / "docker" / "entrypoint.sh").read_text().rstrip().endswith('exec "$@"')


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
    assert "-bucket=surreal" in services["seaweedfs"]["command"]


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
    secret_name = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|BASIC_AUTH|TOKEN", re.I)

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if secret_name.search(str(key)) and isinstance(value, str):
                    assert "${" in value, f"{where}.{key} holds a literal secret"
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(raw, "compose")
    # Credentials inside URLs come from the environment too.
    for userinfo in re.findall(r"://([^@/\s]*)@", text):
        password = userinfo.partition(":")[2]
        assert password.startswith("${"), f"a URL in docker-compose.yml holds a literal password: {userinfo}"
    example = (ROOT / ".env.example").read_text()
    for key in SECRETS:
        assert re.search(rf"^{key}=$", example, re.M), f".env.example must name {key} and leave it empty"
