#!/usr/bin/env python
"""Counterfactual pairs of the real Waterbirds: re-run its construction (a CUB bird, cut out with its segmentation,
pasted on a Places background) twice per image, on its own background and on one of the other place.

    python tools/make_waterbirds_pairs.py --waterbirds waterbird_complete95_forest2water2 \\
        --cub CUB_200_2011/images --segmentations segmentations --places places365/data_large --out data/wb_pairs

Needs the original Waterbirds folder (its metadata.csv: img_filename, y, split, place, place_filename), the CUB
images and segmentations (same relative paths, .png masks), and the Places images named by place_filename. Writes a
`save_to_disk` DatasetDict (train / validation / test) with the Waterbirds schema and a `counterfactual` image
column, in metadata order; train on it with `--views.mode edit --model.loss.contrastive none` (the trainer uses the
column as it is).
The other background is drawn from the place_filenames of the other place, keyed by (seed, img_id).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from hrssm.cli import cli_main


def composite(bird: Image.Image, mask: Image.Image, background: Image.Image) -> Image.Image:
    """Bird pixels where the segmentation is on (soft mask in [0, 1]), the background (resized to cover the bird
    image and center-cropped, as the original construction does) elsewhere."""
    bird = bird.convert("RGB")
    bg = ImageOps.fit(background.convert("RGB"), bird.size, Image.Resampling.BICUBIC)
    m = np.asarray(mask.convert("L").resize(bird.size), dtype=np.float32)[..., None] / 255.0
    out = np.asarray(bird, np.float32) * m + np.asarray(bg, np.float32) * (1 - m)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--waterbirds", required=True, help="original Waterbirds folder (metadata.csv)")
    p.add_argument("--cub", required=True, help="CUB_200_2011/images")
    p.add_argument("--segmentations", required=True, help="CUB segmentations (img_filename with .png)")
    p.add_argument("--places", required=True, help="Places root that place_filename is relative to")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import pandas as pd
    from datasets import Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from tqdm.auto import tqdm

    from hrssm._io import atomic_directory
    from hrssm.data import WaterbirdsDataError
    from hrssm.data.schema import FEATURES, ORIGINAL_SPLIT_CODES, group_of

    if Path(args.out).exists():
        raise FileExistsError(f"{args.out} exists; remove it or pick another --out")
    meta_path = Path(args.waterbirds) / "metadata.csv"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: --waterbirds must be the original Waterbirds folder")
    meta = pd.read_csv(meta_path)
    need = {"img_id", "img_filename", "y", "split", "place", "place_filename"}
    if need - set(meta.columns):
        raise WaterbirdsDataError(f"{meta_path} lacks columns {sorted(need - set(meta.columns))}")
    roots = {"cub": Path(args.cub), "seg": Path(args.segmentations), "places": Path(args.places)}
    files = {
        "bird": [roots["cub"] / f for f in meta["img_filename"]],
        "mask": [roots["seg"] / Path(f).with_suffix(".png") for f in meta["img_filename"]],
        "own": [roots["places"] / f.lstrip("/") for f in meta["place_filename"]],
    }
    missing = [str(f) for fs in files.values() for f in fs if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} input files are missing, e.g. {missing[:3]}: check --cub, "
                                "--segmentations and --places (place_filename is relative to --places)")
    pools = {place: sorted(set(meta.loc[meta["place"] == place, "place_filename"])) for place in (0, 1)}
    features = Features({**FEATURES, "counterfactual": ImageFeature(mode="RGB")})
    rows: dict[str, dict[str, list]] = {}
    for i, row in tqdm(list(meta.iterrows()), desc="compositing", unit="img"):
        other = pools[1 - int(row["place"])]
        pick = other[np.random.default_rng([args.seed, int(row["img_id"])]).integers(len(other))]
        with Image.open(files["bird"][i]) as bird, Image.open(files["mask"][i]) as mask, \
                Image.open(files["own"][i]) as own, Image.open(roots["places"] / pick.lstrip("/")) as cf:
            image, counterfactual = composite(bird, mask, own), composite(bird, mask, cf)
        split = ORIGINAL_SPLIT_CODES[int(row["split"])]
        r = rows.setdefault(split, {k: [] for k in features})
        label, place = int(row["y"]), int(row["place"])
        for key, value in (("image", image), ("label", label), ("place", place), ("group", group_of(label, place)),
                           ("split", split), ("img_id", int(row["img_id"])), ("counterfactual", counterfactual)):
            r[key].append(value)
    with atomic_directory(args.out) as work:  # a crash leaves no half-written dataset at --out
        DatasetDict({s: Dataset.from_dict(cols, features=features) for s, cols in rows.items()}).save_to_disk(str(work))
    sizes = ", ".join(f"{s}: {len(c['label'])}" for s, c in rows.items())
    print(f"wrote {len(meta)} pairs to {args.out} ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
