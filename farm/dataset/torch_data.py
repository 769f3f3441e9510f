"""`SurrealClips`: a torch Dataset over rendered clips (the only module of the farm that imports torch)."""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from farm.core.errors import FarmError
from farm.core.storage import Storage
from farm.dataset.clips import (
    FILTER_FIELDS,
    ClipFileError,
    ClipRef,
    fetch_clip,
    load_clip,
    matches,
    parse_filters,
    read_manifest,
)


class SurrealClips(Dataset[dict[str, Any]]):
    """Rendered clips as tensors of the clean convention (farm/dataset/clips.py says what each value means).

    `root`: a local output folder (every clip under it, found by its manifest), or a farm Storage with `specs`
    (the clips' spec dicts, as `SurrealClips.from_farm` reads them from the database). `index`: "frame" (an
    item is one frame) or "clip" (an item is the whole clip, arrays with a leading T axis). `split`, `runs` and
    `where` (filters such as "frames_with_body>=0.9", over spec fields and QC statistics) choose the clips.

    Each clip's files (the mp4 included) are read and decoded once and kept for the next items of the same
    clip (`cache_clips` clips per process; each DataLoader worker has its own): iterate frames of a clip
    together (`clip_order`) rather than shuffling across clips frame by frame.
    """

    def __init__(
        self,
        root: str | Path | Storage,
        specs: Iterable[dict[str, Any]] | None = None,
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
        if isinstance(root, (str, Path)):
            from worker.qc import clips_in_folder

            folder = Path(root)
            if not folder.is_dir():
                raise FarmError(f"{folder} is not a folder of rendered clips; pass the output root")
            refs = [read_manifest(f, name) for f, name in clips_in_folder(folder)]
        else:
            cache = download_dir or Path(tempfile.mkdtemp(prefix="surreal-clips-"))
            refs = [fetch_clip(root, spec, cache) for spec in specs or ()]
        self.clips = [
            r
            for r in refs
            if (split is None or r.spec.split == split)
            and (runs is None or r.spec.run in runs)
            and matches(conditions, r.spec.model_dump(mode="json"), r.qc)
        ]
        self.index = index
        self.source = (
            f"{root}" + (f", split={split}" if split else "") + (f", where={list(where)}" if where else "")
        )
        self.rgb = rgb
        self.cache_clips = max(1, cache_clips)
        self.decodes = 0  # clips read and decoded by this process (a test counts them)
        self.keep(self.clips)

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
        with session_scope(settings.database_url) as session:
            specs = list(
                session.scalars(select(Clip.spec).where(Clip.status == ClipStatus.DONE).order_by(Clip.id))
            )
        return cls(open_storage(settings), specs, **kwargs)

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
