"""Settings shared by every command, read from FARM_* environment variables and an optional .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from farm.core.choices import Convention, Device, Engine

PAPER_TARGET_FRAMES = 6_536_752


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FARM_", env_file=".env", extra="ignore")

    # The embedded defaults need no server: a SQLite file, a SQLite-backed broker, a local folder.
    database_url: str = "sqlite:///farm.db"
    broker_url: str = "sqla+sqlite:///farm-broker.db"
    storage_url: str = "farm-output"
    s3_endpoint_url: str | None = None
    target_frames: int = PAPER_TARGET_FRAMES

    # Every clip seed derives from this and the clip's (catalog, sequence, run, clip index).
    seed: int = 0
    body_model: Literal["free", "smpl"] = "free"
    smpl_dir: Path | None = None
    render_queue: str = "render"

    # Workers: a clip is claimed for `lease_seconds` and the lease is renewed every third of that, so a dead
    # worker's clip is taken back by the reconciler within about this long.
    lease_seconds: int = Field(default=120, ge=2)
    max_attempts: int = Field(default=3, ge=1)
    clip_time_limit_s: int = Field(default=1800, ge=10)  # hard limit for one clip; the soft one is 90% of it
    reconcile_every_s: int = Field(default=60, ge=1)
    # A failed attempt's clip is offered again after this long, twice as long after each further failure
    # (at most 10 minutes); 0 offers it again at once.
    retry_delay_s: float = Field(default=30.0, ge=0)
    upload_retry_s: float = Field(default=120.0, ge=0)  # how long uploads keep retrying through an outage

    # Rendering (used by workers).
    device: Device = "cpu"
    engine: Engine = "cycles"
    samples: int = Field(default=1, ge=1)
    # What the files' values mean: SURREAL's own (what existing SURREAL tools assume) or the clean one.
    convention: Convention = "surreal"
    render_memory_limit_mb: int = Field(default=4096, ge=256)  # a warm Blender process is recycled above this
    render_processes: int = Field(default=0, ge=0)  # Blender processes per clip; 0: one per core on the CPU

    # The dashboard's basic auth, "user:password" (as Flower's); required to listen beyond this host.
    dashboard_auth: SecretStr | None = None

    @field_validator("dashboard_auth")
    @classmethod
    def _user_and_password(cls, auth: SecretStr | None) -> SecretStr | None:
        if auth is None or auth.get_secret_value() == "":
            return None
        user, _, password = auth.get_secret_value().partition(":")
        if not user or not password:
            raise ValueError("it must be user:password, both non-empty")
        return auth

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_is_a_url(cls, url: str | None) -> str | None:
        from urllib.parse import urlsplit

        if url is None or url == "":
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("it must be an http:// or https:// URL such as http://127.0.0.1:8333")
        return url

    @field_validator("database_url", "broker_url")
    @classmethod
    def _absolute_sqlite_path(cls, url: str) -> str:
        """Pin a relative SQLite file to the folder the setting was read in, so child processes and cached
        engines (kombu keeps one per URL) all mean the same file."""
        for scheme in ("sqlite:///", "sqla+sqlite:///"):
            if url.startswith(scheme) and not url.startswith(scheme + "/") and url != scheme + ":memory:":
                return scheme + str(Path(url.removeprefix(scheme)).resolve())
        return url

    cache_dir: Path = Path.home() / ".cache" / "surreal-farm"


def with_convention(settings: Settings, convention: str | None) -> Settings:
    """The settings with a `--convention` option applied (None keeps FARM_CONVENTION)."""
    from farm.core.errors import FarmError

    if convention is None:
        return settings
    if convention not in ("surreal", "clean"):
        raise FarmError(f"--convention {convention!r} must be surreal or clean")
    return settings.model_copy(update={"convention": convention})


def settings_error(exc: ValidationError) -> str:
    """One sentence per bad FARM_* value (the value itself left out: it may be a secret)."""
    problems = []
    for e in exc.errors():
        name = "FARM_" + "_".join(str(part) for part in e["loc"][:1]).upper()
        msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{name} is not valid ({msg[0].lower()}{msg[1:]})")
    return "; ".join(problems) + "; fix it in the environment or in .env"


@lru_cache
def get_settings() -> Settings:
    """The settings; a bad FARM_* value ends in one sentence (FarmError), not a pydantic traceback."""
    from farm.core.errors import FarmError

    try:
        return Settings()
    except ValidationError as exc:
        raise FarmError(settings_error(exc)) from None
