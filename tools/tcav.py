#!/usr/bin/env python
"""TCAV in latent space: does a concept (e.g. a water background) drive a class's probe logit?

    python tools/tcav.py --model runs/demo/export --data data/synthetic_waterbirds_64 --concept place=1 --target label

1. encodes train / validation / test with the exported encoder
2. fits the linear probe of --target (fit on train, C chosen on validation worst-group accuracy; --probe dfr for the
   DFR-style one), whose logit TCAV differentiates
3. the concept: train images matching --concept KEY=VALUE (or every image of --concept-folder), against random sets
   drawn from the other train images; --runs CAVs against different random sets, and as many random-vs-random ones
4. for each class of --target: the TCAV score on its test images, the random scores, a two-sided t-test
Prints the table, writes tcav.json and tcav.png to --out.

With a linear probe the logit's gradient is the same for every example, so each CAV scores 0 or 1 for a whole
class; the mean over random sets and the t-test are what carry the information.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hrssm.cli import cli_main


def parse_concept(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or key not in ("label", "place", "group") or not value.strip().lstrip("-").isdigit():
        raise ValueError(f"--concept {text!r} must look like KEY=VALUE with KEY one of label, place, group and an "
                         "integer VALUE (e.g. place=1 for a water background)")
    return key, int(value)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export folder, run folder or hub repo id")
    p.add_argument("--data", required=True, help="Waterbirds source (hub id, save_to_disk dir, original folder)")
    p.add_argument("--concept", default=None, help="a filter on the train split, e.g. place=1")
    p.add_argument("--concept-folder", default=None, help="or a folder of concept images (png/jpg)")
    p.add_argument("--target", default="label", choices=["label", "place"])
    p.add_argument("--probe", default="train", choices=["train", "dfr"])
    p.add_argument("--runs", type=int, default=20, help="random sets (CAVs of the concept, and as many null CAVs)")
    p.add_argument("--set-size", type=int, default=200, help="examples per concept / random set")
    p.add_argument("--out", default="runs/tcav")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import hrssm
    from hrssm.concepts import concept_cavs, linear_logit_fn, tcav_by_class
    from hrssm.data import LABEL_NAMES, PLACE_NAMES, SPLITS, load_waterbirds
    from hrssm.evaluation import dfr_probe, train_probe
    from hrssm.latents import dataset_latents
    from hrssm.plots import tcav_bars

    if (args.concept is None) == (args.concept_folder is None):
        raise ValueError("give exactly one of --concept KEY=VALUE and --concept-folder DIR")
    key_value = parse_concept(args.concept) if args.concept else None
    folder_images = _folder_images(Path(args.concept_folder)) if args.concept_folder else None
    enc = hrssm.load(args.model)
    splits = {s: load_waterbirds(args.data, s, **enc.cfg.preprocessing()) for s in SPLITS}
    feats = {s: dataset_latents(enc, ds, progress=False) for s, ds in splits.items()}
    train, val, test = feats["train"], feats["validation"], feats["test"]
    probe = (train_probe(train, val, test, args.target) if args.probe == "train"
             else dfr_probe(train, val, test, args.target, seeds=(0,))).probe
    logit = linear_logit_fn(probe)
    if key_value:
        key, value = key_value
        mask = train[key] == value
        if mask.sum() < 3:
            raise ValueError(f"only {int(mask.sum())} train images have {key}={value}: a concept needs >= 3")
        concept, pool, name = train["features"][mask], train["features"][~mask], f"{key}={value}"
    else:
        concept = enc.encode(folder_images).numpy()
        pool, name = train["features"], Path(args.concept_folder).name

    names = LABEL_NAMES if args.target == "label" else PLACE_NAMES
    cavs, nulls = concept_cavs(concept, pool, args.runs, args.set_size, seed=args.seed)
    rows = tcav_by_class(logit, test["features"], test[args.target], names, cavs, nulls)
    lines = [f"TCAV of concept `{name}` for the {args.target} probe ({args.probe}), {args.runs} random sets of "
             f"{min(args.set_size, len(concept), len(pool) // 2)}", "",
             "| class | TCAV score | random CAVs | p (two-sided t-test) | significant | CAV held-out accuracy |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['class']} | {r['score']:.3f} | {r['random_mean']:.3f} | {r['p_value']:.2g} | "
              f"{'yes' if r['significant'] else 'no'} | {r['cav_accuracy']:.3f} |" for r in rows]
    table = "\n".join(lines)
    print("\n" + table + "\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tcav.json").write_text(json.dumps({"concept": name, "target": args.target, "probe": args.probe,
                                               "model": str(args.model), "rows": rows}, indent=2))
    tcav_bars(rows, out / "tcav.png", name, f"TCAV: {name} -> {args.target} logit")
    print(f"wrote {out / 'tcav.json'} and {out / 'tcav.png'}")
    return 0


def _folder_images(folder: Path):
    from PIL import Image

    if not folder.is_dir():
        raise FileNotFoundError(f"--concept-folder {folder} is not a folder")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(files) < 3:
        raise ValueError(f"--concept-folder {folder} has {len(files)} images (.png/.jpg); a concept needs >= 3")
    return [Image.open(f).convert("RGB") for f in files]


if __name__ == "__main__":
    sys.exit(main())
