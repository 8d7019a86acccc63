#!/usr/bin/env python
"""Where in an export does the bird live? The headline probe on each part of its features, beside its random init.

    python tools/probe_parts.py --model runs/demo/export --data data/synthetic_waterbirds_64

The parts: h (the deterministic state), z (the global latent's class probabilities; "z mode": its one-hot mode, what
the decoder reads), s (every local cell, flat), the latents [h, z, s] (what `encode()` returns), the encoder's mean
patch token (`encode(features="tokens")`) and the latents with that token appended. Each is probed with DFR as
published (docs/evaluation.md: worst group on test, mean ± std over the probe seeds, and the worst group of the
validation halves that chose C), for the model and for a random-init model of the same config. Prints a table,
writes parts.json to --out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hrssm.cli import cli_main
from hrssm.commands import default_output_dir, local_export, model_and_data_parser

PARTS = ("h", "z", "z mode", "s", "latents", "tokens", "latents + tokens")


def part_features(enc: dict[str, np.ndarray], part: str) -> np.ndarray:
    """(N, D) features of one part from `dataset_latents` output (h, z, z_probs, s, tokens): "latents" and "tokens"
    are what `encode(features=...)` returns (`hrssm.latents.with_features`); "z" is the global posterior's class
    probabilities (as in the latents), "z mode" its one-hot mode (what the decoder reads)."""
    from hrssm.latents import with_features

    if part in ("latents", "tokens"):
        return with_features(enc, part)["features"]
    if part == "latents + tokens":
        return np.concatenate([with_features(enc, "latents")["features"], enc["tokens"]], axis=1)
    features = {"h": enc["h"], "z": enc["z_probs"], "z mode": enc["z"], "s": enc["s"].reshape(len(enc["s"]), -1)}[part]
    if features.shape[1] == 0:
        raise ValueError(f"this model has no {part!r} features (a model without a local level has no s)")
    return features


def probe_parts(model, splits: dict, seeds: tuple[int, ...], parts=PARTS, batch_size: int = 128
                ) -> dict[str, dict[str, dict]]:
    """{"trained" | "random init": {part: DFR probe dict + "dims"}} for the model and its random-init twin."""
    from hrssm.evaluation import dfr_probe
    from hrssm.latents import dataset_latents
    from hrssm.report import random_init_encoder

    out: dict[str, dict[str, dict]] = {}
    device = next(model.parameters()).device
    for name, encoder in (("trained", model), ("random init", random_init_encoder(model.cfg).to(device))):
        enc = {s: dataset_latents(encoder, d, batch_size, progress=False) for s, d in splits.items()}
        out[name] = {}
        for part in parts:
            if part == "s" and not enc["train"]["s"].size:
                continue
            f = {s: {**e, "features": part_features(e, part)} for s, e in enc.items()}
            probe = dfr_probe(f["train"], f["validation"], f["test"], seeds=seeds).to_dict()
            out[name][part] = {**probe, "dims": f["train"]["features"].shape[1]}
    return out


def table(result: dict[str, dict[str, dict]]) -> str:
    lines = ["| part | dims | bird, DFR: worst group | validation halves: worst group | random init: worst group |",
             "| --- | --- | --- | --- | --- |"]
    for part, probe in result["trained"].items():
        rand = result["random init"][part]
        lines.append(f"| {part} | {probe['dims']} | {probe['acc_wg']:.3f} ± {probe['acc_wg_std']:.3f} | "
                     f"{np.mean(probe['selection_worst_group']):.3f} | "
                     f"{rand['acc_wg']:.3f} ± {rand['acc_wg_std']:.3f} |")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = model_and_data_parser(__doc__)
    p.add_argument("--seeds", type=int, default=5, help="probe seeds (validation splits, balanced subsamples)")
    p.add_argument("--out", default=None, help="folder for parts.json (default: eval_parts/ beside a local export, "
                   "else eval_parts-OWNER--NAME/ here)")
    args = p.parse_args(argv)
    import hrssm
    from hrssm._io import atomic_write_json
    from hrssm.data import SPLITS, load_waterbirds

    model = hrssm.load(args.model, device=args.device, revision=args.revision)
    splits = {s: load_waterbirds(args.data, s, revision=args.data_revision, **model.cfg.preprocessing())
              for s in SPLITS}
    result = probe_parts(model, splits, tuple(range(args.seeds)), batch_size=args.batch_size)
    print(table(result))
    out = Path(args.out) if args.out else default_output_dir(args.model, local_export(args.model), "eval_parts")
    print(f"wrote {atomic_write_json(out / 'parts.json', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
