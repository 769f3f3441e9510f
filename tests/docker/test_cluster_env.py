"""cluster.env is the cluster's and .env the local farm's: compose gives the farm's containers every variable
of cluster.env (env_file) and interpolates the compose file from it alone, while `farm` outside compose (and
`make demo`) reads only .env."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from compose_file import COMPOSE, ROOT, SECRETS, compose_config, parsed_config

FARM_IMAGES = ("surreal-farm-app", "surreal-farm-worker")
ONLY_IN_CLUSTER_ENV = {"FARM_SAMPLES": "64", "FARM_SEED": "7", "FARM_LEASE_SECONDS": "300"}
# Settings that compose builds for the farm (from the secrets and hosts) win over cluster.env's.
BUILT = {"FARM_DATABASE_URL": "sqlite:///not-the-cluster.db", "FARM_STORAGE_URL": "/tmp/not-the-bucket"}


def environments(folder: Path, **settings: str) -> dict[str, dict[str, str]]:
    """Each service's container environment with SECRETS and settings as cluster.env: from `docker-compose
    config` where it is installed, else from the YAML as compose merges it (env_file, then environment)."""
    if shutil.which("docker-compose"):
        services = parsed_config(folder, **settings)["services"]
        return {
            name: {k: str(v) for k, v in s.get("environment", {}).items()} for name, s in services.items()
        }
    values = {**SECRETS, **settings}
    (folder / "cluster.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    found = {}
    for name, service in yaml.safe_load(COMPOSE.read_text())["services"].items():
        env = dict(values) if service.get("env_file") == "${CLUSTER_ENV:-cluster.env}" else {}
        env.update({k: str(v) for k, v in service.get("environment", {}).items()})
        found[name] = env
    return found


def farm_services(config: dict[str, Any]) -> set[str]:
    return {name for name, s in config["services"].items() if s["image"].startswith(FARM_IMAGES)}


def test_every_farm_variable_set_only_in_cluster_env_reaches_every_farm_container(tmp_path):
    raw = yaml.safe_load(COMPOSE.read_text())
    farm = farm_services(raw)
    assert {"migrate", "reconciler", "bookkeeper", "flower", "worker", "worker-cpu"} <= farm
    assert not any(name in COMPOSE.read_text() for name in ONLY_IN_CLUSTER_ENV)  # compose does not list them
    envs = environments(tmp_path, **ONLY_IN_CLUSTER_ENV, **BUILT)
    for name in farm:
        for key, value in ONLY_IN_CLUSTER_ENV.items():
            assert envs[name].get(key) == value, f"{name} does not get {key} from cluster.env"
    for name in farm - {"flower"}:  # Flower is Celery's, not the farm's: it reads no FARM_* URL
        assert envs[name]["FARM_DATABASE_URL"].startswith("postgresql+psycopg://farm:"), name
        assert envs[name]["FARM_STORAGE_URL"] == "s3://surreal/", name
    # The other services' images are not the farm's: they get only what they name.
    for name in set(envs) - farm:
        assert not set(ONLY_IN_CLUSTER_ENV) & set(envs[name]), f"{name} gets the farm's settings"


def test_secrets_come_only_from_cluster_env_and_a_local_env_file_is_not_read(tmp_path):
    envs = {name: s["environment"] for name, s in parsed_config(tmp_path)["services"].items()}
    assert envs["postgres"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert envs["flower"]["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]
    assert envs["grafana"]["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    assert envs["prometheus"] == {"FARM_DASHBOARD_AUTH": SECRETS["FARM_DASHBOARD_AUTH"]}

    # The project folder's .env (the local farm's, which compose would read by default) plays no part once
    # cluster.env is the env file: neither its secrets nor its FARM_* settings reach any container.
    project = tmp_path / "project"
    project.mkdir()
    local = {key: f"fromLocalEnv{i}" for i, key in enumerate(SECRETS)}
    local |= {"FARM_DEVICE": "cuda", "CLUSTER_ENV": str(project / ".env")}
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in local.items()))
    default = compose_config(None, project=project)  # what compose would do without cluster.env
    assert default.returncode == 0 and "fromLocalEnv" in default.stdout, default.stderr
    result = compose_config(tmp_path / "cluster.env", project=project)
    assert result.returncode == 0, result.stderr
    assert "fromLocalEnv" not in result.stdout and "cuda" not in result.stdout
    assert SECRETS["POSTGRES_PASSWORD"] in result.stdout


def test_the_local_farm_and_the_demo_ignore_cluster_env(farm_env, tmp_path):
    from farm.cli.demo import demo_settings
    from farm.core.settings import Settings, get_settings

    example = (ROOT / "cluster.env.example").read_text()
    assert "FARM_DEVICE=optix" in example
    (tmp_path / "cluster.env").write_text(
        example + "FARM_SAMPLES=64\nFARM_DATABASE_URL=postgresql+psycopg://farm:x@postgres:5432/farm\n"
    )
    settings = get_settings()
    assert (settings.device, settings.samples) == ("cpu", 1)
    assert settings.database_url == f"sqlite:///{tmp_path / 'farm.db'}"
    demo = Settings.model_validate(
        {k.removeprefix("FARM_").lower(): v for k, v in demo_settings(tmp_path / "demo").items()}
    )
    assert (demo.device, demo.samples) == ("cpu", 1)

    (tmp_path / ".env").write_text("FARM_SAMPLES=3\n")  # the local farm's own file is still read
    farm_env()
    assert get_settings().samples == 3
