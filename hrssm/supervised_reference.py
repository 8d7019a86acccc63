"""The supervised reference: what bird labels buy with a given network, input size and training budget.

A network is trained with labels on a random half of the test split and scored on the other half. On Waterbirds
(and its twin) the test split's background is independent of the bird, so there is no shortcut to learn: the score
is how well that network *can* find the bird at that resolution, the ceiling for a self-supervised export of the
same encoder read by a linear probe. Two networks:

- "encoder": a model config's ViT encoder (its image size, patch size, stem, pooling; `hrssm.encoder.build_encoder`)
  with a linear head on its global embedding;
- "cnn": a small 4-layer CNN (3x3 convolutions, BatchNorm, ReLU, stride 2 after the first, global mean pool),
  issue 12's reference.

Class-balanced cross-entropy (the twin's test split is 78% landbirds), random horizontal flips, AdamW with a linear
warm-up (a tenth of the steps, at most 100) and a cosine decay. Deterministic for a seed on one machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .encoder import build_encoder
from .evaluation import GroupScores, group_accuracies

ARCHS = ("encoder", "cnn")


@dataclass
class ReferenceSettings:
    """How the reference network is trained."""

    arch: str = "encoder"  # one of ARCHS
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    target: str = "label"  # "label" (the bird) or "place" (the background)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.target not in ("label", "place"):
            raise ValueError(f"target must be 'label' (the bird) or 'place' (the background), got {self.target!r}")
        for key in ("steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")


class SmallCNN(nn.Module):
    """(N, 3, H, W) in [-0.5, 0.5] -> logits (N, classes): four 3x3 conv / BatchNorm / ReLU layers (32, 64, 128,
    128 channels; stride 2 after the first), global mean pool, linear head."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate([(3, 32), (32, 64), (64, 128), (128, 128)]):
            layers += [nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean((2, 3)))


class EncoderClassifier(nn.Module):
    """A config's ViT encoder with a linear head on its global embedding: (N, 3, S, S) -> logits (N, classes)."""

    def __init__(self, cfg: ModelConfig, classes: int = 2) -> None:
        super().__init__()
        self.encoder = build_encoder(cfg.image_size, cfg.encoder)
        self.head = nn.Linear(cfg.encoder.width, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images)[0])


def split_in_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random split of range(n) into a training half and a scoring half (the rest)."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2 :]


def train_reference(images: torch.Tensor, target: np.ndarray, settings: ReferenceSettings, seed: int,
                    cfg: ModelConfig | None = None, progress: bool = False) -> nn.Module:
    """Train a reference network of `settings.arch` (the "encoder" of `cfg`) on images (N, 3, S, S) in [-0.5, 0.5]
    with integer targets (N,), with a progress bar if `progress`; returns it in eval mode."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    if settings.arch == "encoder" and cfg is None:
        raise ValueError("arch='encoder' needs the model config whose encoder to train")
    model = EncoderClassifier(cfg) if settings.arch == "encoder" else SmallCNN()
    y = torch.as_tensor(target, dtype=torch.long)
    counts = torch.bincount(y, minlength=2).clamp(min=1).float()
    weight = counts.sum() / (2 * counts)  # class-balanced
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, min(100, settings.steps // 10))  # linear warm-up, then cosine decay
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / settings.steps)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in tqdm(range(settings.steps), desc=f"supervised reference, seed {seed}", disable=not progress):
        idx = torch.randint(0, len(y), (settings.batch_size,), generator=gen)
        batch = images[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        loss = F.cross_entropy(model(batch), y[idx], weight=weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"supervised reference loss is {loss.item()} at step {step}; lower the learning "
                                     "rate (--lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Predicted classes (N,) of images (N, 3, S, S)."""
    return torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]).numpy()


@dataclass
class ReferenceRun:
    """One seed of the supervised reference: its scores, and what it predicted for which images."""

    scores: GroupScores  # of the target on the scoring half; the groups are the usual (bird, background) ones
    scored: np.ndarray  # (M,) indices of the scored images (the half not trained on)
    pred: np.ndarray  # (M,) the predicted classes of those images


def supervised_reference(images: torch.Tensor, labels: dict[str, np.ndarray], settings: ReferenceSettings,
                         seeds: tuple[int, ...] = (0, 1, 2), cfg: ModelConfig | None = None,
                         progress: bool = False) -> list[ReferenceRun]:
    """For each seed: a random half of the test split to train on, the other half to score. images (N, 3, S, S) in
    [-0.5, 0.5]; labels: "label", "place", "group" arrays (N,) of the same images. Returns one `ReferenceRun` per
    seed."""
    target, groups = labels[settings.target], labels["group"]
    runs = []
    for seed in seeds:
        fit, score = split_in_halves(len(target), seed)
        model = train_reference(images[fit], target[fit], settings, seed, cfg, progress)
        pred = predict(model, images[score])
        runs.append(ReferenceRun(group_accuracies(pred, target[score], groups[score], groups[fit]), score, pred))
    return runs
