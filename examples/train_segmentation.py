"""Train a small U-Net for the paper's 14-part segmentation on clips the farm rendered, on the CPU.

    python examples/train_segmentation.py farm-output --minutes 5
    python examples/train_segmentation.py farm-output --smoke     # seconds: a few steps, for the tests

Reads the clips once through farm.dataset.SurrealClips (either convention; items are clean), keeps their
frames in memory at half size (160x120), trains on the train split and evaluates the mean IoU over the 14
parts (background excluded, as the paper) on the test split's clips, next to the majority-class baseline
(every pixel the commonest training class) and the majority part inside the true body mask.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from farm.dataset import SurrealClips

CLASSES = 15  # background + the paper's 14 parts


def block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
        nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
    )  # fmt: skip


class UNet(nn.Module):
    """Three levels, 16-32-64 channels."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.d1, self.d2, self.d3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.u2, self.u1 = block(6 * w, 2 * w), block(3 * w, w)
        self.head = nn.Conv2d(w, CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.d1(x)
        b = self.d2(F.max_pool2d(a, 2))
        c = self.d3(F.max_pool2d(b, 2))
        b = self.u2(torch.cat([F.interpolate(c, size=b.shape[-2:]), b], 1))
        return self.head(self.u1(torch.cat([F.interpolate(b, size=a.shape[-2:]), a], 1)))


def batch_tensors(item: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = item["rgb"].permute(0, 3, 1, 2).float() / 255.0
    rgb = F.interpolate(rgb, scale_factor=0.5, mode="bilinear", align_corners=False)
    labels = item["parts14"][:, None].float()
    labels = F.interpolate(labels, scale_factor=0.5, mode="nearest")[:, 0].long()
    return (rgb - 0.45) / 0.25, labels


def frames_of(clips: SurrealClips, workers: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame of the clips as half-size (normalised RGB, 14-part labels), at most `limit` per clip."""
    xs, ys = [], []
    clips.index = "clip"
    for item in DataLoader(clips, batch_size=None, num_workers=workers):
        x, y = batch_tensors({"rgb": item["rgb"][:limit], "parts14": item["parts14"][:limit]})
        xs.append(x.half())  # memory: half floats and byte labels, widened per batch
        ys.append(y.to(torch.uint8))
    return torch.cat(xs), torch.cat(ys)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over classes 1..14 (the parts), from a 15x15 confusion matrix (rows truth)."""
    tp = np.diag(confusion)[1:]
    union = confusion.sum(0)[1:] + confusion.sum(1)[1:] - tp
    return float(np.mean(np.where(union > 0, tp / np.maximum(union, 1), 0.0)))


def confusion_of(pred: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    idx = (truth.reshape(-1) * CLASSES + pred.reshape(-1)).numpy()
    return np.bincount(idx, minlength=CLASSES * CLASSES).reshape(CLASSES, CLASSES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", type=Path, help="a folder of rendered clips (a farm's output, render-clip --out)"
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="training time")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few frames (tests)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.monotonic()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    train = SurrealClips(args.root, split="train")
    test = SurrealClips(args.root, split="test")
    if not train.clips:
        print(f"no train-split clips under {args.root}", file=sys.stderr)
        return 2
    held_out = "the test split"
    if not test.clips:  # a folder of train clips only (the smoke test): hold out its last clip
        if len(train.clips) < 2:
            print(f"{args.root} needs a test-split clip or two train clips", file=sys.stderr)
            return 2
        test = SurrealClips(args.root, split="train")
        test.keep(train.clips[-1:])
        train.keep(train.clips[:-1])
        held_out = "a held-out train clip (no test-split clips here)"
    # Read every clip once (DataLoader workers decode whole clips in parallel) and keep the half-size frames.
    x_train, y_train = frames_of(train, args.workers, limit=8 if args.smoke else None)
    x_test, y_test = frames_of(test, args.workers, limit=4 if args.smoke else None)
    print(
        f"read {len(x_train)} train and {len(x_test)} test frames in {time.monotonic() - t0:.0f}s", flush=True
    )
    counts = np.bincount(y_train.reshape(-1).numpy(), minlength=CLASSES)
    steps_limit = 3 if args.smoke else None
    seconds = 1e9 if args.smoke else args.minutes * 60
    model = UNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    weights = torch.ones(CLASSES)
    weights[0] = 0.2  # the background is most of every frame
    start, step = time.monotonic(), 0
    generator = torch.Generator().manual_seed(args.seed)
    while time.monotonic() - start < seconds and (steps_limit is None or step < steps_limit):
        pick = torch.randint(len(x_train), (args.batch,), generator=generator)
        loss = F.cross_entropy(model(x_train[pick].float()), y_train[pick].long(), weight=weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} {time.monotonic() - start:.0f}s", flush=True)

    model.eval()
    majority = int(np.argmax(counts))
    majority_part = int(np.argmax(counts[1:]) + 1)
    conf = np.zeros((CLASSES, CLASSES), np.int64)
    base, masked = np.zeros_like(conf), np.zeros_like(conf)
    with torch.no_grad():
        for i in range(0, len(x_test), args.batch):
            x, y = x_test[i : i + args.batch].float(), y_test[i : i + args.batch].long()
            conf += confusion_of(model(x).argmax(1), y)
            base += confusion_of(torch.full_like(y, majority), y)
            masked += confusion_of(torch.where(y > 0, majority_part, 0), y)
    frames, epochs = len(x_test), step * args.batch / max(1, len(x_train))
    print(
        f"trained {step} steps ({epochs:.1f} epochs) on {len(x_train)} frames of {len(train.clips)} clips "
        f"in {time.monotonic() - start:.0f}s"
    )
    print(f"evaluated on {frames} frames of {len(test.clips)} clips from {held_out}")
    print(f"mean IoU over the 14 parts: model {mean_iou(conf):.4f}")
    print(f"majority-class baseline (class {majority} everywhere): {mean_iou(base):.4f}")
    print(f"majority part inside the true body mask (part {majority_part}): {mean_iou(masked):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
