"""Counterfactual pairs of the synthetic Waterbirds twin: the same bird, same pose, the background swapped.

The generator draws every image from two independent random streams (bird, background) keyed by (seed, split,
index), so the other-background twin of row k of a split is one `render` away. `add_counterfactuals` adds it as a
`counterfactual` image column, after checking that the dataset really is the synthetic twin of that seed (the row
re-drawn with its own background must equal the stored one).

For the real Waterbirds, `tools/make_waterbirds_pairs.py` re-runs the original construction (CUB bird cut out with
its segmentation, pasted on a Places background) on the bird's own background and on one of the other place, and
writes both as a dataset with a `counterfactual` column, which `load_waterbirds` keeps and the trainer uses as is.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from . import synthetic


class CounterfactualError(ValueError):
    """The dataset cannot be paired: not the synthetic twin of this seed, or resized/shuffled since generation."""


def counterfactual_image(seed: int, split: str, index: int, label: int, place: int, image_size: int) -> np.ndarray:
    """The uint8 HWC image of synthetic row `index` of `split` drawn on a background of `place` (same bird)."""
    bird_rng, bg_rng = synthetic.example_rngs(seed, split, index)
    background, _ = synthetic.sample_background(bg_rng, place, image_size)
    return synthetic.render(synthetic.sample_bird(bird_rng, label), background)


def _jpeg_roundtrip(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(synthetic.encode_jpeg(image))).convert("RGB"))


def check_is_twin(ds, split: str, seed: int = 0, check_rows: int = 3, *, need: str) -> int:
    """The image side of `ds` (a split of the synthetic twin, rows in generation order) after checking that its
    first `check_rows` rows re-draw to the stored images; else a CounterfactualError that ends with `need` (what
    the caller needs the twin for, and what to do)."""
    if len(ds) == 0:
        raise CounterfactualError(f"the {split} split is empty")
    size = ds[0]["image"].size[0]
    for k in range(min(check_rows, len(ds))):
        row = ds[k]
        redrawn = _jpeg_roundtrip(counterfactual_image(seed, split, k, row["label"], row["place"], size))
        stored = np.asarray(row["image"].convert("RGB"))
        if redrawn.shape != stored.shape or np.abs(redrawn.astype(int) - stored.astype(int)).mean() > 2.0:
            raise CounterfactualError(
                f"row {k} of the {split} split is not the synthetic Waterbirds twin of seed {seed} at {size}x{size}: "
                + need)
    return size


def twin_palettes(ds, split: str, seed: int = 0) -> np.ndarray:
    """`synthetic.own_palette` of every row of `ds`, a split of the synthetic twin of `seed` as generated (checked:
    else a CounterfactualError); (N,) bool, True where the bird wears its own class's colours."""
    check_is_twin(ds, split, seed, need="the palettes are known only for the synthetic twin as generated "
                  "(tools/make_synthetic_waterbirds.py, not shuffled or resized; --twin-seed SEED if it was made "
                  "with another seed); the real Waterbirds has none")
    return synthetic.own_palette(split, len(ds), seed)


def add_counterfactuals(ds, split: str, seed: int = 0, check_rows: int = 3):
    """A copy of a synthetic Waterbirds split (`datasets.Dataset`, rows in generation order) with a `counterfactual`
    image column: the same bird on a background of the other place. Raises CounterfactualError when the first
    `check_rows` rows do not re-draw to the stored images."""
    from datasets import Features
    from datasets import Image as ImageFeature

    size = check_is_twin(ds, split, seed, check_rows,
                         need="counterfactual pairs need the synthetic set as generated (tools/"
                              "make_synthetic_waterbirds.py, not shuffled or resized; set data.synthetic_seed to "
                              "its seed) or a dataset with its own `counterfactual` column (see "
                              "hrssm/data/counterfactual.py)")

    def pair(batch, indices):
        return {"counterfactual": [Image.fromarray(_jpeg_roundtrip(counterfactual_image(
            seed, split, i, label, 1 - place, size))) for i, label, place in zip(indices, batch["label"],
                                                                                  batch["place"])]}

    return ds.map(pair, with_indices=True, batched=True, batch_size=64, desc="counterfactual pairs",
                  features=Features({**ds.features, "counterfactual": ImageFeature()}))
