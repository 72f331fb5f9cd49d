"""A small image classifier trained by physdiff on a dataset's training split, whose
penultimate layer is the feature space of the image metrics (FCD, precision/recall).

It is trained once per dataset and cached (safetensors) under ``$PHYSDIFF_CACHE`` (default
``~/.cache/physdiff``), keyed by a fingerprint of the data, so every evaluation of every run
on the same data uses the very same features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ck
from . import seeding
from .data.images import ImageData
from .errors import PhysdiffError

FEATURES = 128


class Classifier(nn.Module):
    """conv(32) → conv(64) → pool → 128 features (ReLU) → logits; any (C, H, W) ≥ 4×4.
    ``features(x)`` gives the 128-d representation used by the metrics."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(64 * 16, FEATURES)
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        return F.relu(self.fc(self.pool(h).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _to_input(x: np.ndarray) -> torch.Tensor:
    """Pixels in [0, 1] → the classifier's input, 2·x − 1."""
    return torch.as_tensor(np.asarray(x, dtype=np.float32)) * 2 - 1


def _fingerprint(data: ImageData) -> str:
    h = hashlib.sha256()
    for a in (data.train_x, data.train_y, data.test_x, data.test_y):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("PHYSDIFF_CACHE") or Path.home() / ".cache" / "physdiff")


def _random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Augmentation: shift each image by up to ``max_shift`` pixels (zero fill)."""
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, len(x)), generator=g)
    for oy in range(2 * max_shift + 1):
        for ox in range(2 * max_shift + 1):
            m = (dy == oy) & (dx == ox)
            out[m] = pad[m, :, oy:oy + h, ox:ox + w]
    return out


def train_classifier(data: ImageData, *, epochs: int = 30, batch_size: int = 64, max_steps: int = 3000,
                     seed: int = 0, progress=None) -> tuple[Classifier, float]:
    """Train on the training split (AdamW, one-cycle lr, random ±1 pixel shifts) for ``epochs``
    passes or ``max_steps`` steps, whichever is fewer; return (model, test accuracy).
    ``progress``: ``progress.py``."""
    from .progress import progress_bar

    if data.train_y is None or data.num_classes < 2:
        raise PhysdiffError(f"dataset {data.name!r} has no class labels; the classifier metrics need them")
    torch.manual_seed(seeding.torch_seed(seed))
    g = seeding.generator(seed)
    model = Classifier(data.shape[0], data.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    x, y = _to_input(data.train_x), torch.as_tensor(data.train_y)
    steps = min(max_steps, epochs * max(1, len(x) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    with progress_bar(progress, steps, "classifier", "step") as bar:
        for _ in range(steps):
            idx = torch.randint(len(x), (batch_size,), generator=g)
            loss = F.cross_entropy(model(_random_shift(x[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
    model.eval().requires_grad_(False)
    return model, accuracy(model, data.test_x, data.test_y)


@torch.no_grad()
def predict(model: Classifier, x: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Predicted labels of images x (pixels in [0, 1])."""
    return np.concatenate([model(_to_input(x[i:i + batch])).argmax(1).numpy() for i in range(0, len(x), batch)])


@torch.no_grad()
def features(model: Classifier, x: np.ndarray, batch: int = 2048) -> np.ndarray:
    """(N, 128) float64 features of images x (pixels in [0, 1])."""
    return np.concatenate([model.features(_to_input(x[i:i + batch])).double().numpy()
                           for i in range(0, len(x), batch)])


def accuracy(model: Classifier, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x) == np.asarray(y)).mean())


def load_or_train(data: ImageData, *, cache: Path | None = None, log=print,
                  progress=None) -> tuple[Classifier, float]:
    """The cached classifier of ``data`` (trained and saved on first use, ``progress`` of its
    training: ``progress.py``); (model, test accuracy)."""
    path = (cache or cache_dir()) / f"classifier-{data.name}-{_fingerprint(data)}.safetensors"
    if path.is_file():
        try:
            tensors, meta = ck.read_tensors(path, "classifier cache")
            model = Classifier(data.shape[0], data.num_classes)
            ck.load_module_state(model, tensors, f"classifier cache {str(path)!r}")
            return model.eval().requires_grad_(False), float(json.loads(meta["test_accuracy"]))
        except (PhysdiffError, KeyError, ValueError):
            log(f"classifier cache {path} is unreadable; training a new one")
    model, acc = train_classifier(data, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck.atomic_save_tensors(path, model.state_dict(), {"test_accuracy": json.dumps(acc), "dataset": data.name})
    log(f"trained the {data.name} classifier (test accuracy {acc:.4f}); cached in {path}")
    return model, acc
