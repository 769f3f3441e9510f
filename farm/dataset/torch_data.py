"""`SurrealClips`: a torch Dataset over rendered clips (the only module of the farm that imports torch)."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from farm.core.errors import FarmError
from farm.core.spec import ClipSpec, parse_spec
from farm.core.storage import Storage
from farm.dataset.clips import (
    FILTER_FIELDS,
    ClipFileError,
    ClipRef,
    StoredClip,
    fetch_checked,
    load_clip,
    matches,
    parse_filters,
    read_manifest,
)


class SurrealClips(Dataset[dict[str, Any]]):
    """Rendered clips as tensors of the clean convention (farm/dataset/clips.py says what each value means: a
    moving camera's K, R, t are each frame's own; a clip with correspondence adds uv and canon, so batch such
    clips apart from the others, as clips of several people).

    `root`: a local output folder (every clip under it, found by its manifest), or a farm Storage with `specs`
    (`StoredClip`s, as `SurrealClips.from_farm` reads them from the database, or bare spec dicts). `index`:
    "frame" (an item is one frame) or "clip" (an item is the whole clip, arrays with a leading T axis). `split`,
    `runs` and `where` (filters such as "frames_with_body>=0.9", over spec fields and QC statistics) choose the
    clips; for a StoredClip they are applied before anything is downloaded.

    From S3, clips are downloaded into `download_dir`, or else into a temporary folder that is removed when the
    dataset is closed (`close()`) or garbage-collected. Downloaded and cached files are checked against a
    StoredClip's size and sha256 (a cached copy that differs is downloaded again once; a download that differs
    is refused); bare spec dicts carry no record, so their files are not checked.

    Each clip's files (the mp4 included) are read and decoded once and kept for the next items of the same
    clip (`cache_clips` clips per process; each DataLoader worker has its own): iterate frames of a clip
    together (`clip_order`) rather than shuffling across clips frame by frame.
    """

    def __init__(
        self,
        root: str | Path | Storage,
        specs: Iterable[StoredClip | dict[str, Any]] | None = None,
        index: str = "frame",
        split: str | None = None,
        runs: Sequence[int] | None = None,
        where: Sequence[str] = (),
        rgb: bool = True,
        cache_clips: int = 1,
        download_dir: Path | None = None,
    ) -> None:
        if index not in ("frame", "clip"):
            raise FarmError(f"index {index!r} must be frame or clip")
        conditions = parse_filters(where, FILTER_FIELDS)

        def chosen(spec: ClipSpec, qc: dict[str, Any] | None, filters: bool = True) -> bool:
            return (
                (split is None or spec.split == split)
                and (runs is None or spec.run in runs)
                and (not filters or matches(conditions, spec.model_dump(mode="json"), qc))
            )

        self.download_dir = download_dir
        if isinstance(root, (str, Path)):
            from worker.qc import clips_in_folder

            folder = Path(root)
            if not folder.is_dir():
                raise FarmError(f"{folder} is not a folder of rendered clips; pass the output root")
            refs = [read_manifest(f, name) for f, name in clips_in_folder(folder)]
            self.clips = [r for r in refs if chosen(r.spec, r.qc)]
        else:
            cache = download_dir
            if cache is None:
                cache = self.download_dir = Path(tempfile.mkdtemp(prefix="surreal-clips-"))
                # Registered before any download, so a failing one leaves nothing behind either.
                self._remove_download_dir = weakref.finalize(self, _remove_folder, cache, os.getpid())
            self.clips = []
            for item in specs or ():
                # A StoredClip holds the database's qc, so it is chosen before any download; a bare spec's
                # `where` waits for its manifest's qc.
                known = isinstance(item, StoredClip)
                stored = item if isinstance(item, StoredClip) else StoredClip(item)
                spec = parse_spec(stored.spec)  # one sentence for a bad spec, e.g. a name holding '../'
                if not chosen(spec, stored.qc, filters=known):
                    continue
                ref = fetch_checked(root, stored, spec, cache)
                if known or chosen(ref.spec, ref.qc):
                    self.clips.append(ref)
        self.index = index
        self.source = (
            f"{root}" + (f", split={split}" if split else "") + (f", where={list(where)}" if where else "")
        )
        self.rgb = rgb
        self.cache_clips = max(1, cache_clips)
        self.decodes = 0  # clips read and decoded by this process (a test counts them)
        self.keep(self.clips)

    def close(self) -> None:
        """Remove the temporary download folder, if this dataset made one (garbage collection does too)."""
        remove = getattr(self, "_remove_download_dir", None)
        if remove is not None:
            remove()

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker's copy (spawn) must not remove the main process' folder: the finalizer stays here.
        state = dict(self.__dict__)
        state.pop("_remove_download_dir", None)
        return state

    def keep(self, clips: list[ClipRef]) -> None:
        """Use only these clips (of this dataset's own), for a held-out subset."""
        self.clips = list(clips)
        self._items = [(c, f) for c in range(len(self.clips)) for f in range(self.clips[c].frames)]
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    @classmethod
    def from_farm(cls, settings: Any = None, **kwargs: Any) -> SurrealClips:
        """The database's done clips (FARM_DATABASE_URL), read from the farm's storage (FARM_STORAGE_URL)."""
        from sqlalchemy import select

        from farm.core.db import session_scope
        from farm.core.models import Clip, ClipStatus
        from farm.core.settings import get_settings
        from farm.core.storage import open_storage

        settings = settings or get_settings()
        query = select(Clip.spec, Clip.qc, Clip.checksums).where(Clip.status == ClipStatus.DONE)
        if kwargs.get("split") is not None:  # the rest of the choice is made before any download too
            query = query.where(Clip.split == kwargs["split"])
        if kwargs.get("runs") is not None:
            query = query.where(Clip.run.in_(list(kwargs["runs"])))
        with session_scope(settings.database_url) as session:
            rows = session.execute(query.order_by(Clip.id)).all()
        # A done clip without checksums gets {}: its downloads are then refused, not taken unchecked.
        clips = [StoredClip(spec, qc, checksums or {}) for spec, qc, checksums in rows]
        return cls(open_storage(settings), clips, **kwargs)

    def __len__(self) -> int:
        return len(self.clips) if self.index == "clip" else len(self._items)

    def clip_arrays(self, clip: int) -> dict[str, np.ndarray]:
        """All frames of one clip (numpy, clean convention), from this process' cache."""
        if clip in self._cache:
            self._cache.move_to_end(clip)
            return self._cache[clip]
        arrays = load_clip(self.clips[clip], with_rgb=self.rgb)
        self.decodes += 1
        self._cache[clip] = arrays
        while len(self._cache) > self.cache_clips:
            self._cache.popitem(last=False)
        return arrays

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):  # IndexError still, so that iterating over the dataset ends
            raise IndexError(
                f"SurrealClips has no item {i}: it holds {len(self)} {self.index}s ({len(self.clips)} clips "
                f"from {self.source}); render some clips there first, or check the folder and filters"
            )
        clip, frame = (i, None) if self.index == "clip" else self._items[i]
        ref = self.clips[clip]
        arrays = self.clip_arrays(clip)
        item: dict[str, Any] = {
            key: torch.from_numpy(np.array(a if frame is None else a[frame])) for key, a in arrays.items()
        }
        item.update(
            clip=ref.name, split=ref.spec.split, run=ref.spec.run, frame=-1 if frame is None else frame
        )
        return item

    def clip_order(self, shuffle: bool = False, seed: int = 0) -> list[int]:
        """Frame indices clip by clip (clips, and frames inside each, shuffled when asked): a DataLoader's
        `sampler` that decodes each clip once per epoch."""
        rng = np.random.default_rng(seed)
        order = list(range(len(self.clips)))
        if shuffle:
            rng.shuffle(order)
        starts = np.cumsum([0] + [c.frames for c in self.clips])
        out: list[int] = []
        for c in order:
            frames = np.arange(starts[c], starts[c + 1])
            if shuffle:
                rng.shuffle(frames)
            out.extend(int(f) for f in frames)
        return out


def _remove_folder(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked DataLoader worker's copy: the folder is the main process'
        shutil.rmtree(folder, ignore_errors=True)


def loader(dataset: SurrealClips, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """A DataLoader over the dataset whose errors are the dataset's own sentences: a worker process' failure
    is re-raised as a FarmError without the worker's traceback."""
    from torch.utils.data import DataLoader

    try:
        yield from DataLoader(dataset, **kwargs)
    except ClipFileError as exc:
        raise ClipFileError(str(exc)) from None
    except FarmError as exc:
        raise FarmError(str(exc).splitlines()[-1].split("FarmError: ")[-1]) from None
