"""Settings shared by every command, read from FARM_* environment variables and an optional .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # Rendering (used by workers).
    device: Literal["cpu", "cuda", "optix"] = "cpu"
    engine: Literal["cycles", "eevee"] = "cycles"
    samples: int = Field(default=1, ge=1)
    cache_dir: Path = Path.home() / ".cache" / "surreal-farm"


@lru_cache
def get_settings() -> Settings:
    return Settings()
