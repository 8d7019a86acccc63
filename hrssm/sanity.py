"""Quick sanity runs: overfit a model on a handful of images and read the collapse diagnostics.

Used by the test suite and by `tools/overfit_check.py` (whose numbers docs/model.md quotes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig
from .data.views import ViewConfig, make_views
from .diagnostics import CollapseReport, diagnose_collapse
from .world_model import WorldModel


@dataclass
class OverfitResult:
    train: dict[str, float]  # metrics averaged over the last 20 training steps
    eval: dict[str, float]  # metrics of the trained model in eval mode on the clean images (T = 1)
    report: CollapseReport
    model: WorldModel


def overfit(cfg: ModelConfig, images: torch.Tensor, steps: int = 800, batch_size: int = 16, lr: float = 1e-3,
            views: ViewConfig | None = None, seed: int = 0) -> OverfitResult:
    """Train `cfg` on `images` (N, 3, S, S) in [-0.5, 0.5] with AdamW; return train/eval metrics and the verdict."""
    torch.manual_seed(seed)
    views = views or ViewConfig(num_views=1, mode="repeat")
    model = WorldModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    mean_image = images.mean(dim=0)
    gen = torch.Generator().manual_seed(seed)
    recent: list[dict[str, torch.Tensor]] = []
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        v, a = make_views(images[idx], views, generator=gen)
        out = model(v, a, mean_image=mean_image)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        model.update_ema()
        recent = (recent + [out.metrics])[-20:]
    train = {k: float(torch.stack([m[k] for m in recent]).mean()) for k in recent[-1]}
    model.eval()
    with torch.no_grad():
        v, a = make_views(images, ViewConfig(num_views=1, mode="repeat", action_dim=cfg.action_dim))
        ev = {k: float(x) for k, x in model(v, a, mean_image=mean_image).metrics.items()}
    return OverfitResult(train, ev, diagnose_collapse(train), model)
