"""`farm enqueue`: plan the selected sequences' clips, store them in one transaction, queue one task each."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from farm.core.db import utcnow
from farm.core.errors import FarmError
from farm.core.models import Asset, Catalog, Clip, ClipStatus, Sequence
from farm.core.settings import Settings
from farm.core.spec import ClipSpec, Convention, MotionRef, Split, check_safe_name
from scheduler.plan import PlannedClip, iter_plan
from scheduler.sampler import (
    GENDERS,
    AppearancePools,
    SequenceRef,
    ShapeBank,
    builtin_backgrounds,
    builtin_shape_bank,
    builtin_textures,
    sample_clip_spec,
)

SPLITS: tuple[Split, Split] = ("train", "test")


@dataclass(frozen=True)
class Selection:
    sequences: str  # "<catalog>_all" or "NAME[,NAME...]" (a NAME may be "catalog/sequence")
    runs: tuple[int, ...] = (0, 1, 2)
    split: Split | None = None
    limit: int | None = None
    people: tuple[int, int] = (1, 1)  # (fewest, most) people per clip, drawn per clip from its seed
    # Issue 26: the camera motion modes' weights (None: SURREAL's static camera), drawn per clip from its seed;
    # the shutter's open fraction (motion blur, 0: none); whether to write <name>_corr.mat.
    camera_motions: dict[str, float] | None = None
    shutter: float = 0.0
    correspondence: bool = False


def select_sequences(session: Session, selector: str, split: Split | None) -> list[tuple[str, Sequence]]:
    """(catalog name, sequence) pairs named by the selector, in a stable order."""
    chosen: dict[int, tuple[str, Sequence]] = {}
    unknown = []
    catalogs = {c.name: c for c in session.scalars(select(Catalog))}
    for item in (part.strip() for part in selector.split(",")):
        if not item:
            continue
        catalog_name, _, name = item.rpartition("/")
        try:
            check_safe_name(name, "sequence name")
            if catalog_name:
                check_safe_name(catalog_name, "catalog name")
        except ValueError as exc:
            raise FarmError(
                f"{item!r} is not a sequence name (names use letters, digits, '_', '-' and '.', never '/' "
                "or '..', optionally prefixed by 'catalog/'); see `farm catalog list` for the names"
            ) from exc
        whole_catalog = name.removesuffix("_all")
        selects_catalog = not catalog_name and name.endswith("_all") and whole_catalog in catalogs
        query = select(Catalog.name, Sequence).join(Catalog)
        if selects_catalog:
            query = query.where(Catalog.name == whole_catalog)
        else:
            query = query.where(Sequence.name == name)
            if catalog_name:
                query = query.where(Catalog.name == catalog_name)
        rows = [(c, s) for c, s in session.execute(query)]
        if not selects_catalog and len(rows) > 1:
            options = ", ".join(f"{c}/{name}" for c, _ in rows)
            raise FarmError(f"the sequence {name!r} is in several catalogs; name one of {options}")
        if not rows:
            unknown.append(item)
        chosen.update({s.id: (c, s) for c, s in rows})
    if unknown:
        hint = (
            " (a `<catalog>_all` needs an imported catalog)"
            if any(u.endswith("_all") for u in unknown)
            else ""
        )
        raise FarmError(
            f"unknown sequence or catalog: {', '.join(unknown[:5])}{hint}; see `farm catalog list`"
        )
    if not chosen:
        raise FarmError("no sequences selected; pass --sequences <catalog>_all or sequence names")
    pairs = sorted(chosen.values(), key=lambda cs: (cs[0], cs[1].name))
    return [(c, s) for c, s in pairs if split is None or s.split == split]


def load_pools(session: Session, catalog_ids: set[int]) -> AppearancePools:
    """The registered assets, with the built-in pools standing in for any kind that has none."""
    notes = []
    shapes: dict[Any, ShapeBank] = {}
    banks = session.scalars(select(Asset).where(Asset.kind == "shapes").order_by(Asset.id)).all()
    for gender in GENDERS:
        mine = [b for b in banks if b.gender == gender]
        # Prefer the bank that came with the catalog being enqueued (SURREAL's CAESAR shapes for cmu).
        mine.sort(key=lambda b: b.catalog_id not in catalog_ids)
        if mine:
            shapes[gender] = ShapeBank(mine[0].uri, np.asarray(mine[0].data, dtype=np.float64))
        else:
            shapes[gender] = builtin_shape_bank(gender)
            notes.append(f"{gender} shapes")
    textures = {}
    backgrounds = {}
    for split in SPLITS:
        query = select(Asset.uri).where(Asset.kind == "background", Asset.split == split).order_by(Asset.uri)
        backgrounds[split] = list(session.scalars(query)) or builtin_backgrounds(split)
        if backgrounds[split][0].startswith("builtin:"):
            notes.append(f"{split} backgrounds")
        for gender in GENDERS:
            query = (
                select(Asset.uri)
                .where(Asset.kind == "texture", Asset.split == split, Asset.gender == gender)
                .order_by(Asset.uri)
            )
            textures[(gender, split)] = list(session.scalars(query)) or builtin_textures(gender, split)
            if textures[(gender, split)][0].startswith("builtin:"):
                notes.append(f"{gender} {split} textures")
    return AppearancePools(shapes, textures, backgrounds, notes)


def sequence_ref(catalog: str, seq: Sequence) -> SequenceRef:
    motion = MotionRef(
        uri=seq.motion_uri,
        pose_key=seq.pose_key,
        trans_key=seq.trans_key,
        rate=seq.mocap_rate,
        frames=seq.mocap_frames,
    )
    return SequenceRef(catalog, seq.name, seq.split, motion)  # type: ignore[arg-type]


def planned_clips(
    sequences: list[tuple[str, Sequence]], runs: tuple[int, ...], limit: int | None
) -> list[tuple[str, Sequence, PlannedClip]]:
    plan = ((c, s, p) for c, s in sequences for p in iter_plan(s.mocap_frames, s.mocap_rate, runs))
    return list(itertools.islice(plan, limit))  # built only up to the limit


def summary(plan: list[tuple[str, Sequence, PlannedClip]]) -> dict[str, dict[str, int]]:
    clips = {"train": 0, "test": 0}
    frames = {"train": 0, "test": 0}
    for _, seq, planned in plan:
        clips[seq.split] += 1
        frames[seq.split] += planned.frame_count
    return {
        "clips": {**clips, "total": sum(clips.values())},
        "frames": {**frames, "total": sum(frames.values())},
    }


CLIP_COLUMNS = (
    "sequence_id", "name", "split", "run", "clip_index", "frame_start", "frame_stop", "stride", "seed", "spec",
    "status", "attempts", "created_at", "updated_at", "change_note",
)  # fmt: skip


def insert_new_clips(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert clip rows (with the spec as a ClipSpec), skipping any that exist; returns the new ids."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        statement = (
            sqlite.insert(Clip)
            .on_conflict_do_nothing(index_elements=["sequence_id", "run", "clip_index"])
            .returning(Clip.id)
        )
        return list(
            session.scalars(statement, [{**r, "spec": r["spec"].model_dump(mode="json")} for r in rows])
        )
    # COPY into a temporary table, then one INSERT .. SELECT: multi-row INSERT statements of this size spend
    # most of their time in the driver's query parsing, which made this the slowest part of enqueueing.
    columns = ", ".join(CLIP_COLUMNS)
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(
            f"CREATE TEMP TABLE new_clips ON COMMIT DROP AS SELECT {columns} FROM clips WITH NO DATA"
        )
        with cursor.copy(f"COPY new_clips ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [row["spec"].model_dump_json() if c == "spec" else row[c] for c in CLIP_COLUMNS]
                )
        cursor.execute(
            f"INSERT INTO clips ({columns}) SELECT {columns} FROM new_clips "
            "ON CONFLICT (sequence_id, run, clip_index) DO NOTHING RETURNING id"
        )
        new_ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("DROP TABLE new_clips")
    return new_ids


class Partners:
    """The sequences another person's window may come from: the clip's catalog and split, in a stable order,
    those holding the clip's frame count (read once per catalog and split, filtered once per count)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sequences: dict[tuple[int, str], list[SequenceRef]] = {}
        self.lists: dict[tuple[int, str, int], list[SequenceRef]] = {}

    def holding(self, catalog_id: int, catalog: str, split: str, frames: int) -> list[SequenceRef]:
        if (catalog_id, split) not in self.sequences:
            rows = self.session.scalars(
                select(Sequence)
                .where(Sequence.catalog_id == catalog_id, Sequence.split == split)
                .order_by(Sequence.name)
            )
            self.sequences[catalog_id, split] = [sequence_ref(catalog, s) for s in rows]
        key = (catalog_id, split, frames)
        if key not in self.lists:
            self.lists[key] = [r for r in self.sequences[catalog_id, split] if r.frames >= frames]
        return self.lists[key]


def unstored(
    session: Session, plan: list[tuple[str, Sequence, PlannedClip]]
) -> list[tuple[str, Sequence, PlannedClip]]:
    """The clips of the plan that are not in the database yet."""
    catalog_ids = {seq.catalog_id for _, seq, _ in plan}
    existing = set(
        session.execute(
            select(Clip.sequence_id, Clip.run, Clip.clip_index)
            .join(Sequence)
            .where(Sequence.catalog_id.in_(catalog_ids))
        )
    )
    return [(c, s, p) for c, s, p in plan if (s.id, p.run, p.clip_index) not in existing]


def store_clips(
    session: Session,
    plan: list[tuple[str, Sequence, PlannedClip]],
    project_seed: int,
    body_model: str,
    progress: Callable[[int], None] = lambda n: None,
    convention: Convention = "surreal",
    people: tuple[int, int] = (1, 1),
    camera_motions: dict[str, float] | None = None,
    shutter: float = 0.0,
    correspondence: bool = False,
) -> list[int]:
    """Sample and insert the clips not stored yet; returns the new clip ids."""
    todo = unstored(session, plan)
    progress(len(plan) - len(todo))
    if not todo:
        return []
    pools = load_pools(session, {seq.catalog_id for _, seq, _ in plan})
    refs: dict[int, SequenceRef] = {}
    partners = Partners(session) if people != (1, 1) else None
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for catalog, seq, planned in todo:
        ref = refs.get(seq.id) or refs.setdefault(seq.id, sequence_ref(catalog, seq))
        others = (
            partners.holding(seq.catalog_id, catalog, seq.split, planned.frame_count) if partners else None
        )
        spec: ClipSpec = sample_clip_spec(
            ref,
            planned,
            pools,
            project_seed,
            body_model,
            convention,
            people,
            others,
            camera_motions=camera_motions,
            shutter=shutter,
            correspondence=correspondence,
        )
        rows.append(
            {
                "sequence_id": seq.id,
                "name": spec.name,
                "split": seq.split,
                "run": planned.run,
                "clip_index": planned.clip_index,
                "frame_start": planned.frame_start,
                "frame_stop": planned.frame_start + planned.frame_count,
                "stride": planned.stride,
                "seed": spec.seed,
                "spec": spec,
                "status": ClipStatus.QUEUED,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "change_note": "planned",  # the database logs the arrival (migration 0004's trigger)
            }
        )
        if len(rows) % 1000 == 0:
            progress(1000)
    new_ids = insert_new_clips(session, rows)
    progress(len(rows) % 1000)
    return new_ids


def enqueue(
    settings: Settings,
    selection: Selection,
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> dict[str, Any]:
    """Plan, store and queue the selected clips; returns the plan's counts and how many clips are new (with
    `dry_run`, how many would be).

    The broker is checked before anything is written, the rows are committed in one transaction, and only
    then are messages sent, so a worker never receives a clip id that is not in the database. If sending
    fails half-way, the database still knows every clip and `farm reconcile` queues the missing ones.
    """
    from farm.core.celery_app import celery_for, check_broker, send_render_tasks
    from farm.core.db import session_scope

    app = None if dry_run else celery_for(settings)
    if app is not None:
        check_broker(app)
    with session_scope(settings.database_url) as session:
        sequences = select_sequences(session, selection.sequences, selection.split)
        plan = planned_clips(sequences, selection.runs, selection.limit)
        counts = summary(plan)
        if dry_run:  # what a real run would add, adding nothing
            return {**counts, "new_clips": len(unstored(session, plan))}
        stored = 0

        def stored_progress(n: int) -> None:
            nonlocal stored
            stored += n
            progress("plan", stored, len(plan))

        new_ids = store_clips(
            session,
            plan,
            settings.seed,
            settings.body_model,
            stored_progress,
            settings.convention,
            selection.people,
            selection.camera_motions,
            selection.shutter,
            selection.correspondence,
        )
    assert app is not None
    try:
        send_render_tasks(app, new_ids)
    except Exception as exc:
        raise FarmError(
            f"stored {len(new_ids)} new clips but could not queue them ({exc}); "
            "run `farm reconcile` once the broker at FARM_BROKER_URL is reachable"
        ) from exc
    progress("queue", len(new_ids), len(new_ids))
    return {**counts, "new_clips": len(new_ids)}
