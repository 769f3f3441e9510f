"""The one reader of a clip's stored files (worker/clip_files.py): it reads what the writer writes and the
original's sample exactly as scipy.io.loadmat does, refuses hostile files (a decompression bomb, frames past the
spec, a manifest's huge frame count) in one sentence naming the file with bounded memory, and serves `farm qc`,
the dataset and the contact sheet alike."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from worker.clip_files import BadClipFile, read_info, read_manifest, read_mat, read_pass

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/surreal_relations.py
from surreal_relations import load_sample  # noqa: E402
from test_qc import spec, write  # noqa: E402

NAME = "01_01_c0001"
T, H, W = 4, 240, 320
BOMB_SHAPE = (20000, 20000)  # float32: 1.6 GB of zeros in a ~1.5 MB file


def one_sentence(message: str, path: Path) -> None:
    assert str(path) in message or path.name in message, message
    assert "\n" not in message and "Traceback" not in message and len(message) < 400, message


def mat_header() -> bytes:
    return b"MATLAB 5.0 MAT-file, test".ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0100) + b"IM"


def mat_bomb(
    path: Path,
    name: str = "depth_1",
    shape: tuple[int, int] = BOMB_SHAPE,
    dims: tuple[int, int] | None = None,
) -> Path:
    """A MAT-5 file whose one compressed variable is a single-precision `shape` array of zeros, inflating to
    its full size (a valid zlib stream: its blocks of zeros repeat, and the checksum is the real one); `dims`:
    what its header declares instead."""
    nbytes, blocks = math.prod(shape) * 4, 1000
    assert nbytes % blocks == 0
    label = name.encode()
    body = (
        struct.pack("<IIII", 6, 8, 7, 0)  # array flags: class single
        + struct.pack("<IIii", 5, 8, *(dims or shape))
        + struct.pack("<II", 1, len(label))
        + label.ljust(-(-len(label) // 8) * 8, b"\0")
        + struct.pack("<II", 7, nbytes)  # miSINGLE data
    )
    prefix = struct.pack("<II", 14, len(body) + nbytes) + body
    z = zlib.compressobj(9)
    head = z.compress(prefix) + z.flush(zlib.Z_FULL_FLUSH)
    block = z.compress(bytes(nbytes // blocks)) + z.flush(zlib.Z_FULL_FLUSH)  # the dictionary starts afresh
    tail = z.flush()[:-4]
    a0 = zlib.adler32(prefix)
    a, b = a0 & 0xFFFF, a0 >> 16
    adler = ((b + nbytes * a) % 65521) << 16 | a  # zeros add `a` to `b` each
    stream = head + block * blocks + tail + struct.pack(">I", adler)
    path.write_bytes(mat_header() + struct.pack("<II", 15, len(stream)) + stream)
    return path


@pytest.fixture
def clip(tmp_path) -> Path:
    """A 4-frame clip as the writer stores it (worker/output.py); its folder."""
    return write(tmp_path, spec()).directory


def test_the_writers_files_read_as_scipy_reads_them(clip):
    info = read_info(clip / f"{NAME}_info.mat", T)
    stored = scipy.io.loadmat(clip / f"{NAME}_info.mat")
    assert set(info) == {"joints2D", "joints3D", "camLoc", "visible", "bbox"}
    for key, value in info.items():
        assert value.dtype == stored[key].dtype and np.array_equal(value, stored[key], equal_nan=True), key
    for prefix in ("depth", "segm", "gtflow", "normal"):
        frames = read_pass(clip / f"{NAME}_{prefix}.mat", prefix, T, W, H)
        stored = scipy.io.loadmat(clip / f"{NAME}_{prefix}.mat")
        assert np.array_equal(frames, np.stack([stored[f"{prefix}_{n}"] for n in range(1, T + 1)])), prefix


@pytest.mark.parametrize("compress", [True, False])
def test_the_originals_sample_info_reads_as_scipy_reads_it(tmp_path, compress):
    """The arrays of the original's 01_01_c0001_info.mat, saved with its cells of file names and strings."""
    sample = load_sample()
    content = {k: v for k, v in sample.items() if k not in ("bg0", "cloth0")}
    cell = np.empty((1, 100), object)
    cell[0, :] = str(sample["bg0"])
    content.update(sequence=str(sample["sequence"]), bg=cell, cloth=cell.copy())
    path = tmp_path / "01_01_c0001_info.mat"
    scipy.io.savemat(path, content, do_compression=compress)
    info = read_info(path, 100)
    assert set(info) == {"joints2D", "joints3D", "camLoc"}
    for key, value in info.items():
        assert value.dtype == sample[key].dtype and np.array_equal(value, sample[key]), key


def test_a_decompression_bomb_is_refused_before_it_is_inflated(tmp_path):
    bomb = mat_bomb(tmp_path / f"{NAME}_depth.mat")
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(BadClipFile) as caught:
        read_pass(bomb, "depth", T, W, H)
    message = str(caught.value)
    one_sentence(message, bomb)
    assert "declares depth_1 as 20000x20000 float32 (1,600,000,000 bytes)" in message
    assert "larger than the 240x320 float32 (307,200 bytes) its spec allows" in message


def test_a_variable_longer_than_its_declared_shape_is_refused(tmp_path):
    bomb = mat_bomb(tmp_path / f"{NAME}_depth.mat", dims=(H, W))
    with pytest.raises(BadClipFile) as caught:
        read_pass(bomb, "depth", T, W, H)
    assert str(caught.value) == (
        f"{bomb} declares depth_1 in 1,600,000,056 bytes, more than the 240x320 float32 its spec allows"
    )


def test_reading_a_bomb_keeps_memory_bounded(tmp_path):
    """Peak memory (ru_maxrss) of a fresh process reading the bomb, over its peak before: a few MB, where
    scipy.io.loadmat allocates the declared 1.6 GB."""
    bomb = mat_bomb(tmp_path / f"{NAME}_depth.mat")
    code = f"""
import resource, sys
from worker.clip_files import BadClipFile, read_pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_pass({str(bomb)!r}, "depth", 100, 320, 240)
except BadClipFile:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_kb = int(run.stdout)
    print(f"peak memory reading the bomb: +{grown_kb} KB")
    assert grown_kb < 100_000  # generous: the refusal inflates a few hundred bytes


def test_frames_past_the_spec_and_gaps_are_refused(tmp_path):
    frame = np.zeros((H, W), np.float32)
    extra = tmp_path / f"{NAME}_depth.mat"
    scipy.io.savemat(extra, {f"depth_{n}": frame for n in range(1, T + 2)}, do_compression=True)
    with pytest.raises(BadClipFile, match=r"holds depth_5, past the 4 frames its spec says$") as caught:
        read_pass(extra, "depth", T, W, H)
    one_sentence(str(caught.value), extra)
    gap = tmp_path / "gap_depth.mat"
    scipy.io.savemat(gap, {"depth_1": frame, "depth_3": frame})
    with pytest.raises(BadClipFile, match="lacks depth_2 of the 4 frames"):
        read_pass(gap, "depth", T, W, H, exact=False)
    short = tmp_path / "short_depth.mat"
    scipy.io.savemat(short, {"depth_1": frame, "depth_2": frame})
    assert read_pass(short, "depth", T, W, H, exact=False).shape == (2, H, W)  # the gate names the count
    with pytest.raises(BadClipFile, match="lacks depth_3 of the 4 frames"):
        read_pass(short, "depth", T, W, H)


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"segm_1": np.zeros((H, W), np.int8)}, "holds segm_1 as int8, not the 240x320 uint8"),
        (
            {"segm_1": np.zeros((H, W), np.float32)},
            r"as 240x320 float32 \(307,200 bytes\), larger than the 240x320 uint8",
        ),
        ({"segm_1": np.zeros((H // 2, W // 2), np.uint8)}, "holds segm_1 of 120x160, not the 240x320"),
        (
            {"segm_1": np.zeros((H, W, 2), np.uint8)},
            r"declares segm_1 as 240x320x2 uint8 \(153,600 bytes\), larger",
        ),
        ({"segm_1": np.zeros((H, W), complex)}, "holds segm_1 as MATLAB array class 6, not real numbers"),
        ({"segm_1": "a string"}, "holds segm_1 as MATLAB array class 4, not real numbers"),
    ],
    ids=["dtype", "wider", "smaller", "larger", "complex", "char"],
)
def test_a_frame_of_another_shape_or_type_is_refused(tmp_path, content, expected):
    path = tmp_path / f"{NAME}_segm.mat"
    scipy.io.savemat(path, content, do_compression=True)
    with pytest.raises(BadClipFile, match=expected) as caught:
        read_pass(path, "segm", T, W, H)
    one_sentence(str(caught.value), path)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"MATLAB 5.0 truncated", "cannot be read (not a MATLAB 5 file)"),
        (None, "cannot be read (it ends early)"),
        (b"\x89HDF\r\n\x1a\n" * 20, "cannot be read (not a MATLAB 5 file)"),
    ],
    ids=["short", "truncated", "hdf5"],
)
def test_a_broken_mat_file_is_one_sentence(clip, data, expected):
    path = clip / f"{NAME}_depth.mat"
    path.write_bytes(path.read_bytes()[:300] if data is None else data)
    with pytest.raises(BadClipFile) as caught:
        read_pass(path, "depth", T, W, H)
    assert str(caught.value) == f"{path} {expected}"


def test_unwanted_variables_are_skipped_without_being_inflated(tmp_path):
    """A bomb under a name nobody reads costs nothing: the info reader skips the original's other keys."""
    path = mat_bomb(tmp_path / "x_info.mat", name="pose")
    assert list(read_mat(path, lambda name: None)) == []
    assert read_info(path, T) == {}


def test_a_manifests_frame_count_is_checked_against_its_spec(clip):
    manifest_path = clip / f"{NAME}_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert read_manifest(clip, NAME)[2] == T
    for frames in (3_000_000, 0.5, -1, "4", True):
        manifest_path.write_text(json.dumps({**manifest, "frames": frames}))
        with pytest.raises(BadClipFile, match="but its spec allows 1 to 4$") as caught:
            read_manifest(clip, NAME)
        one_sentence(str(caught.value), manifest_path)
    manifest_path.write_text(json.dumps({**manifest, "frames": 3}))  # a shorter clip than its spec
    assert read_manifest(clip, NAME)[2] == 3


def test_qc_the_dataset_and_the_contact_sheet_share_the_reader(clip, monkeypatch):
    """None of them reads a .mat with scipy any more, and each refuses the same bomb with the same sentence."""
    from farm.dataset.clips import ClipFileError, load_clip
    from farm.dataset.clips import read_manifest as dataset_manifest
    from worker.contact_sheet import contact_sheet_from_files
    from worker.qc import assess_files

    def no_loadmat(*args, **kwargs):
        raise AssertionError("scipy.io.loadmat reads a clip's file")

    monkeypatch.setattr(scipy.io, "loadmat", no_loadmat)
    assert assess_files(clip, NAME).ok
    assert load_clip(dataset_manifest(clip, NAME))["depth"].shape == (T, H, W)
    assert contact_sheet_from_files(clip, NAME).width > 7 * W

    bomb = mat_bomb(clip / f"{NAME}_depth.mat")
    with pytest.raises(BadClipFile) as caught:
        read_pass(bomb, "depth", T, W, H)
    sentence = str(caught.value)
    assert assess_files(clip, NAME).problems == [sentence.replace(str(bomb), bomb.name) + "."]
    with pytest.raises(ClipFileError) as from_dataset:
        load_clip(dataset_manifest(clip, NAME))
    assert str(from_dataset.value).startswith(sentence + "; ")
    with pytest.raises(BadClipFile) as from_sheet:
        contact_sheet_from_files(clip, NAME)
    assert str(from_sheet.value) == sentence


def test_farm_qc_names_a_long_or_mislabelled_mp4(clip):
    from worker.qc import assess_files
    from worker.video import write_mp4

    video = clip / f"{NAME}.mp4"
    write_mp4(video, np.zeros((9, H, W, 3), np.uint8), 30)
    assert assess_files(clip, NAME).problems == ["the mp4 holds more than the 4 frames the spec says."]
    video.write_bytes(b"#EXTM3U\n#EXTINF:1.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    (problem,) = assess_files(clip, NAME).problems
    assert problem.startswith("the mp4 does not decode (it is not a readable mp4 (") and "\n" not in problem
