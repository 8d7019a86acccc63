"""Evaluate an exported hrssm model on Waterbirds (the `hrssm-eval` command; recipes/eval_probe.py runs the same).

    hrssm-eval --model runs/demo/export --data data/synthetic_waterbirds_64 [--out runs/demo/eval]
    hrssm-eval --model runs/demo/export --data data/synthetic_waterbirds_64 --features tokens   # the encoder's tokens
    hrssm-eval --model runs/demo/export --data data/synthetic_waterbirds_64 --features global   # [h, p(z)] only
    hrssm-eval --model runs/demo/export --data data/synthetic_waterbirds_64 --also global tokens  # one encoding pass

1. encodes train / validation / test (deterministic latents, one view each, with the preprocessing the export
   records; `--features global`: the global level [h, p(z)] only; `--features tokens`: the encoder's mean patch
   token; `--also NAME ...`: more of these from the same pass, each into OUT/eval_NAME/), and, as floors, the
   same images through a random-init model of the same config and as raw 32x32 pixels
2. probes (hrssm/evaluation.py; hyperparameters chosen on validation worst-group accuracy, never on test): the
   bird by DFR as published (Kirichenko et al. 2022; the headline), by DFR on half of validation, fit on train
   (the shortcut), by kNN on balanced validation; the background (place)
3. prints average, worst-group and adjusted-average accuracy (mean ± std over probe seeds) for the model and its
   floors, and every probe's per-group accuracies; metrics: hrssm/metrics/group_accuracy.py (an `evaluate` module)
4. writes eval.json, report.md and the pictures (test reconstructions, per-group bars, t-SNE / UMAP of the test
   features)
5. a local export gets the results in its model card (eval_results metadata, a results table, the pictures in
   export/evaluation/; only with the default `--features latents`: the card describes `encode()`'s default), and a
   run folder's trackers (TensorBoard: logs/) get the pictures (tags eval/..., or eval_FEATURES/...)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..cli import cli_main
from ..encoder import FEATURES
from . import default_output_dir, local_export, model_and_data_parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    from .. import load_world_model
    from ..model_card import add_evaluation
    from ..report import evaluate_model
    from ..tracking import log_pictures_to_run

    p = model_and_data_parser(__doc__)
    p.add_argument("--out", default=None, help="output folder (default: eval/, or eval_FEATURES/ with --features "
                   "other than latents, beside a local export, else eval-OWNER--NAME/ here)")
    p.add_argument("--no-pictures", action="store_true", help="skip the PNGs (t-SNE takes ~30 s on 2 cores)")
    p.add_argument("--no-floors", action="store_true", help="skip the random-init and raw-pixel floors")
    p.add_argument("--no-card", action="store_true", help="leave the export's model card as it is")
    p.add_argument("--seeds", type=int, default=5, help="probe seeds (validation splits, balanced subsamples)")
    p.add_argument("--features", choices=FEATURES, default="latents",
                   help="what is probed (model and random-init floor alike): "
                   + "; ".join(f"'{k}' = {v}" for k, v in FEATURES.items())
                   + " ('latents', what `encode()` returns, is the default). Other than 'latents', the default "
                   "output folder is eval_FEATURES/ and the model card is left alone")
    p.add_argument("--also", nargs="+", choices=FEATURES, default=[], metavar="FEATURES",
                   help="more feature sets probed from the same encoding pass (with their floors), each into "
                   "OUT/eval_NAME/ (eval.json, report.md): " + ", ".join(FEATURES))
    args = p.parse_args(argv)
    latents = args.features == "latents"
    # a local export (its card and run are updated) or a hub repo (never a file of the hub cache)
    export_dir = local_export(args.model)
    folder = "eval" if latents else f"eval_{args.features}"
    out = Path(args.out) if args.out else default_output_dir(args.model, export_dir, folder)
    model = load_world_model(args.model, device=args.device, revision=args.revision)
    result = evaluate_model(model, args.data, out, pictures=not args.no_pictures, batch_size=args.batch_size,
                            floors=not args.no_floors, seeds=tuple(range(args.seeds)),
                            data_revision=args.data_revision, features=args.features, also=args.also,
                            report_intro=[f"Model: `{args.model}`; data: `{args.data}`.", ""])
    print("\n" + result.table + "\n")
    for name, other in result.also.items():
        print(f"The same probes on {name!r} ({FEATURES[name]}; {out / f'eval_{name}'}):\n\n{other.table}\n")
    print(f"report: {out / 'report.md'}   numbers: {out / 'eval.json'}")
    if export_dir is not None:
        if not args.no_card and latents:  # the card describes what encode() returns by default
            add_evaluation(export_dir, json.loads((out / "eval.json").read_text()), out, data=str(args.data))
            print(f"model card: {export_dir / 'README.md'} (eval_results and pictures added)")
        pictures = {f"{folder}/{Path(file).stem}": out / file for file in result.pictures.values()}
        sent = log_pictures_to_run(export_dir.parent, pictures) if pictures else []
        if sent:
            print(f"pictures sent to the run's tracker(s): {', '.join(sent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
