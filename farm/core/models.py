"""The database schema (SQLAlchemy 2). The database is the source of truth for what exists and what is done."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ClipStatus:
    """A clip's life: queued -> running -> done, or -> failed after too many attempts."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ALL = (QUEUED, RUNNING, DONE, FAILED)


class Catalog(Base):
    __tablename__ = "catalogs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # surreal, amass, builtin
    source_uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Sequence(Base):
    __tablename__ = "sequences"
    __table_args__ = (UniqueConstraint("catalog_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    catalog_id: Mapped[int] = mapped_column(ForeignKey("catalogs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(8))
    mocap_frames: Mapped[int] = mapped_column(Integer)
    mocap_rate: Mapped[float] = mapped_column(Float)
    # Where the motion lives: a file and the keys of its pose and translation arrays.
    motion_uri: Mapped[str] = mapped_column(Text)
    pose_key: Mapped[str] = mapped_column(String(160))
    trans_key: Mapped[str] = mapped_column(String(160))


class Asset(Base):
    """Appearance assets: textures, backgrounds and shape banks (whose rows are kept in `data`)."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("kind", "uri"), Index("ix_assets_pick", "kind", "split", "gender"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # texture, background, shapes
    split: Mapped[str | None] = mapped_column(String(8))
    gender: Mapped[str | None] = mapped_column(String(8))
    uri: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str | None] = mapped_column(String(80))
    catalog_id: Mapped[int | None] = mapped_column(ForeignKey("catalogs.id", ondelete="CASCADE"))
    data: Mapped[Any | None] = mapped_column(JSON)


# A done clip whose body is visible (any segm > 0 pixel) in fewer than half its frames.
BODY_OUT_OF_FRAME = text("status = 'done' AND 2 * frames_with_body < frames_done")


class Clip(Base):
    __tablename__ = "clips"
    __table_args__ = (
        UniqueConstraint("sequence_id", "run", "clip_index"),
        Index("ix_clips_finished_at", "finished_at"),
        # The bookkeeping aggregates read these instead of the wide rows (the spec JSON is ~1.3 KB a clip):
        # progress per split/run/state, throughput of finished clips, and listings by state.
        Index(
            "ix_clips_progress",
            "split",
            "run",
            "status",
            postgresql_include=["frame_start", "frame_stop", "frames_done"],
        ),
        Index(
            "ix_clips_status_finished",
            "status",
            "finished_at",
            postgresql_include=["frames_done", "render_seconds"],
        ),
        Index("ix_clips_status_updated", "status", "updated_at", "id"),
        Index("ix_clips_status_worker", "status", "worker"),  # clips done per worker, its current clip
        # The few done clips whose body is out of frame for more than half their frames (`farm status`).
        Index(
            "ix_clips_body_out_of_frame",
            "id",
            postgresql_where=BODY_OUT_OF_FRAME,
            sqlite_where=BODY_OUT_OF_FRAME,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(160))
    split: Mapped[str] = mapped_column(String(8))
    run: Mapped[int] = mapped_column(Integer)
    clip_index: Mapped[int] = mapped_column(Integer)
    frame_start: Mapped[int] = mapped_column(Integer)  # 30 fps frames of the sequence
    frame_stop: Mapped[int] = mapped_column(Integer)
    stride: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    spec: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=ClipStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    output_uri: Mapped[str | None] = mapped_column(Text)
    frames_done: Mapped[int | None] = mapped_column(Integer)
    checksums: Mapped[Any | None] = mapped_column(JSON)  # {relative path: {"sha256": .., "size": ..}}
    render_seconds: Mapped[float | None] = mapped_column(Float)
    # The quality gate's statistics (worker/qc.py), and the one the bookkeeping counts by, as its own column.
    qc: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    frames_with_body: Mapped[int | None] = mapped_column(Integer)
    # Who made the latest change and why: every statement that changes a clip sets both, and the database
    # copies them into clip_events (the trigger of migration 0004).
    changed_by: Mapped[str | None] = mapped_column(String(200))
    change_note: Mapped[str | None] = mapped_column(Text)

    @property
    def frames(self) -> int:
        return self.frame_stop - self.frame_start


class ClipEvent(Base):
    """Append-only log of clip state changes, written by the database itself: a trigger adds a row whenever a
    clip is inserted or its status or attempt count changes (migration 0004)."""

    __tablename__ = "clip_events"
    __table_args__ = (Index("ix_clip_events_clip", "clip_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)


class WorkerRecord(Base):
    """A worker process seen by the farm, with its last heartbeat. What it renders and has finished is read
    from the clips whose `worker` is this name."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # FARM_WORKER_NAME or the hostname, :pid
    hostname: Mapped[str] = mapped_column(String(200))  # the name without the pid: the host a clip excludes
    device: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # A worker that failed several clips in a row takes none until then (the database's time), and says why.
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # Set when the worker process shut down cleanly, cleared by its next heartbeat: a stopped worker is gone.
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FarmSetting(Base):
    """Farm-wide switches kept in the database, e.g. `paused` (see `farm pause`)."""

    __tablename__ = "farm_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
