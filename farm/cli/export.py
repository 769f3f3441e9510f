"""`farm export index` (a Parquet table of the done clips) and `farm export shards` (WebDataset tar shards)."""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from farm.core.errors import BadUsage, FarmError

app = typer.Typer(
    help="Export rendered clips for training: an index table and WebDataset shards.", no_args_is_help=True
)

WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        help="Keep clips matching 'field OP value' (OP: >= <= > < == !=), over spec fields and QC statistics, "
        "for example frames_with_body>=0.9 (a fraction of the clip's frames) or split==train; repeatable.",
    ),
]
FILE_KINDS = {".mp4": "mp4", "_info.mat": "info", "_depth.mat": "depth", "_segm.mat": "segm",
              "_gtflow.mat": "gtflow", "_normal.mat": "normal", "_manifest.json": "manifest",
              "_inst.mat": "inst", "_corr.mat": "corr"}  # fmt: skip
# A sample's arrays (one member each), and those a clip with correspondence (ClipSpec.correspondence) adds: both
# are farm.dataset.shards' own (a test checks), repeated here so that the CLI starts without the dataset reader.
ARRAYS = ("segm", "parts14", "inst", "depth", "depth_bins", "normal", "flow", "joints2D", "joints3D", "visible", "bbox",
          "K", "R", "t")  # fmt: skip
CORR_ARRAYS = ("uv", "canon")


def _done_clips(where: list[str] | None) -> list[Any]:
    """The done clips of FARM_DATABASE_URL that pass the filters, in id order."""
    from sqlalchemy import select

    from farm.core.db import safe_url, session_scope
    from farm.core.models import Clip, ClipStatus
    from farm.core.settings import get_settings
    from farm.dataset.clips import FILTER_FIELDS, matches, parse_filters

    try:
        conditions = parse_filters(where or (), FILTER_FIELDS)
    except FarmError as exc:  # the filter's form and fields are fixed: a bad one is bad usage
        raise BadUsage(f"--where {exc}") from None
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        rows = list(session.scalars(select(Clip).where(Clip.status == ClipStatus.DONE).order_by(Clip.id)))
        session.expunge_all()
    if not rows:
        raise FarmError(
            f"the database {safe_url(settings.database_url)} has no done clips to export; render some first"
        )
    return [r for r in rows if matches(conditions, r.spec, r.qc)]


def index_rows(clips: list[Any], storage: Any) -> list[dict[str, Any]]:
    """One row per clip: spec fields, QC statistics, and each file's URI, sha256 and size."""
    from farm.core.spec import parse_spec
    from farm.dataset.clips import clip_fields

    rows = []
    for clip in clips:
        spec = parse_spec(clip.spec)
        row: dict[str, Any] = {"clip_id": clip.id, **clip_fields(clip.spec, clip.qc)}
        row["shape"], row["light"] = list(spec.shape), list(spec.light)
        row["output_uri"] = clip.output_uri or storage.uri(spec.output_dir)
        row["render_seconds"] = clip.render_seconds
        checksums = {Path(k).name: v for k, v in (clip.checksums or {}).items()}
        for suffix, kind in FILE_KINDS.items():
            name = f"{spec.name}{suffix}"
            if (kind == "inst" and not spec.others) or (kind == "corr" and not spec.correspondence):
                # a one-person clip has SURREAL's files only; _corr.mat only where the spec asks for it
                row[f"{kind}_uri"] = row[f"{kind}_sha256"] = row[f"{kind}_size"] = None
                continue
            row[f"{kind}_uri"] = storage.uri(f"{spec.output_dir}/{name}")
            row[f"{kind}_sha256"] = (checksums.get(name) or {}).get("sha256")
            row[f"{kind}_size"] = (checksums.get(name) or {}).get("size")
        rows.append(row)
    return rows


@app.command("index")
def export_index(
    out: Annotated[Path, typer.Option("--out", help="The Parquet file to write.")],
    where: WhereOption = None,
) -> None:
    """Write one row per done clip (spec fields, QC statistics, storage URIs and checksums) as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from farm.cli.console import out as stdout
    from farm.cli.console import plural
    from farm.core.settings import get_settings
    from farm.core.storage import open_storage

    clips = _done_clips(where)
    rows = index_rows(clips, open_storage(get_settings()))
    table = pa.Table.from_pylist(rows) if rows else pa.table({"clip_id": pa.array([], pa.int64())})
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    stdout.print(f"wrote {plural(len(rows), 'clip')} to {out}", highlight=False)


def sample_key(clip_id: int, spec: Any) -> str:
    """The prefix of a clip's sample keys: readable, and unique because it ends in the database id (names repeat
    across runs and catalogs). Only [A-Za-z0-9_-] is kept: webdataset splits a member name at its first dot."""
    readable = f"{spec.catalog}-{spec.split}-run{spec.run}-{spec.name}"
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', readable)}-id{clip_id}"


def shard_samples(
    clip: dict[str, np.ndarray], key: str, meta: dict[str, Any], image: str, encoding: str = "compact"
) -> Iterator[dict[str, bytes]]:
    """One WebDataset sample per frame: `__key__` (`<key>-fNNN`), a member per array in `encoding` (compact or
    raw, farm/dataset/shards.py) and `json`."""
    from farm.dataset.shards import shard_samples as samples

    return samples(clip, key, meta, image, encoding)


# An export's shards, and the partial ones a killed export left
SHARD_FILE = re.compile(r"(train|test)-\d{6}\.tar|\.(train|test)-\d{6}\.tar\.partial")


class ShardWriter:
    """Tar shards `<prefix>-NNNNNN.tar` of `per_shard` samples each, written as they fill. Each is written as
    `.<prefix>-NNNNNN.tar.partial` and renamed when complete, so a crash never leaves a partial shard that looks
    whole; leaving the `with` block on an error removes the one being written."""

    def __init__(self, folder: Path, prefix: str, per_shard: int) -> None:
        self.folder, self.prefix, self.per_shard = folder, prefix, per_shard
        self.tar: tarfile.TarFile | None = None
        self.count = 0
        self.shards: list[Path] = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.close()
        elif self.tar is not None:
            self.tar.fileobj.close()  # not tar.close(): no end blocks on a failure
            self.tar = None
            self.partial.unlink(missing_ok=True)

    @property
    def partial(self) -> Path:
        return self.shards[-1].with_name(f".{self.shards[-1].name}.partial")

    def write(self, sample: dict[str, bytes]) -> None:
        if self.tar is None or self.count % self.per_shard == 0:
            self.close()
            self.shards.append(self.folder / f"{self.prefix}-{len(self.shards):06d}.tar")
            # PAX: a key longer than ustar's 100 characters gets a header instead of failing
            self.tar = tarfile.open(self.partial, "w", format=tarfile.PAX_FORMAT)
        key = sample["__key__"].decode()
        for ext, data in sample.items():
            if ext == "__key__":
                continue
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
            with self.partial.open("rb") as done:  # on disk before it gets its final name
                os.fsync(done.fileno())
            self.partial.replace(self.shards[-1])


@app.command("shards")
def export_shards(
    out: Annotated[Path, typer.Option("--out", help="The folder for the shards (train-*.tar, test-*.tar).")],
    frames_per_shard: Annotated[
        int, typer.Option("--frames-per-shard", min=1, help="Samples per tar.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="The shuffle's seed.")] = 0,
    image: Annotated[
        Literal["png", "jpg"], typer.Option("--image", help="RGB as png (lossless) or jpg (quality 95).")
    ] = "png",
    encoding: Annotated[
        Literal["compact", "raw"],
        typer.Option(
            "--encoding",
            help="compact: labels as 8-bit PNG, depth, flow, normals (and uv, canon) as 16-bit fixed-point PNG "
            "within stated bounds (about 0.1 MB a frame at 320x240); raw: every array as exact .npy (about 2 MB "
            "a frame). farm.dataset.shards.decode_sample reads either.",
        ),
    ] = "compact",
    mix_clips: Annotated[
        int, typer.Option("--mix-clips", min=1, help="Frames are shuffled across windows of this many clips.")
    ] = 8,
    where: WhereOption = None,
) -> None:
    """Write the done clips as WebDataset shards of one frame each, in the clean convention (farm.dataset); read
    them back with farm.dataset.shards.decode_sample."""
    import tempfile

    from farm.cli.console import out as stdout
    from farm.cli.console import plural, progress_bar
    from farm.core.settings import get_settings
    from farm.core.spec import parse_spec
    from farm.core.storage import open_storage
    from farm.dataset.clips import StoredClip, fetch_checked, load_clip

    clips = _done_clips(where)
    storage = open_storage(get_settings())
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = sum(c.frames_done or c.frames for c in clips)
    written: dict[str, list[Path]] = {}
    with tempfile.TemporaryDirectory(prefix="farm-shards-") as tmp, progress_bar() as bar:
        task = bar.add_task("writing shards", total=total)
        for split in ("train", "test"):
            chosen = [c for c in clips if c.split == split]
            order = [chosen[i] for i in rng.permutation(len(chosen))]
            with ShardWriter(out, split, frames_per_shard) as writer:
                for start in range(0, len(order), mix_clips):
                    window: list[dict[str, bytes]] = []
                    for clip in order[start : start + mix_clips]:
                        stored = StoredClip(clip.spec, clip.qc, clip.checksums or {})  # downloads checked
                        ref = fetch_checked(storage, stored, parse_spec(clip.spec), Path(tmp))
                        meta = {"clip": ref.name, "clip_id": clip.id, "split": split, "run": ref.spec.run,
                                "sequence": ref.spec.sequence, "convention": "clean", "written_in": ref.convention,
                                "qc": ref.qc}  # fmt: skip
                        if ref.spec.camera_motion is not None:  # issue 26's, only where a clip has them
                            meta["camera_motion"] = ref.spec.camera_motion.model_dump(mode="json")
                        if ref.motion_blur is not None:
                            meta["motion_blur"] = ref.motion_blur
                        window.extend(
                            shard_samples(
                                load_clip(ref), sample_key(clip.id, ref.spec), meta, image, encoding
                            )
                        )
                    for i in rng.permutation(len(window)):
                        writer.write(window[i])
                        bar.advance(task)
            written[split] = writer.shards
    # The folder holds exactly this export: an earlier, larger one's extra shards would be read with it.
    mine = {p for shards in written.values() for p in shards}
    stale = sorted(p for p in out.iterdir() if SHARD_FILE.fullmatch(p.name) and p not in mine)
    for path in stale:
        path.unlink()
    for split, shards in written.items():
        if shards:
            stdout.print(
                f"{split}: {plural(len(shards), 'shard')} in {out} ({split}-{{000000..{len(shards) - 1:06d}}}.tar)",
                highlight=False,
            )
    stdout.print(
        f"wrote {plural(len(mine), 'shard')}, removed {plural(len(stale), 'stale shard')} of an earlier export",
        highlight=False,
    )
