#!/usr/bin/env python
"""The main job, end to end on the embedded synthetic data (no network; 8 to 16 minutes on a 2-core CPU, machines
differ by about 2x):

    python recipes/demo.py [--section.key VALUE ...]      # overrides go to recipes/configs/demo.yaml (--help)

1. makes the synthetic Waterbirds twin at 64x64 (once) in data/synthetic_waterbirds_64
2. trains recipes/configs/demo.yaml with Accelerate (resumes / reuses runs/demo if it is there; --fresh deletes it
   and starts over)
3. loads the export (runs/demo/export) the way a user would, with WorldModel.from_pretrained
4. evaluates it (hrssm.report.evaluate_model, as recipes/eval_probe.py): reconstructions of held-out test images
   against the mean-image floor; probes on the latents (bird by DFR as published, by DFR on half of validation,
   fit on train, by kNN; background), beside the same probes on a random-init model of the same config and on raw
   pixels (the floors); then the same probes and floors for the global level alone (`encode(features="global")`)
   and for the encoder's mean patch token (`encode(features="tokens")`), from the same encoding pass
   (runs/demo/eval_global, runs/demo/eval_tokens)
5. prints the tables (worst-group / average / adjusted accuracy, mean ± std over probe seeds); runs/demo/report.md
   has them with the pictures (reconstructions, per-group accuracy bars, t-SNE of test latents); the export's
   model card gets the results (eval_results) and the pictures, and TensorBoard (runs/demo/logs) the pictures
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hrssm.cli import cli_main
from hrssm.commands.config_args import config_parser, print_config
from hrssm.data import synthetic
from hrssm.evaluation import floors_table
from hrssm.model_card import add_evaluation
from hrssm.report import evaluate_model
from hrssm.tracking import log_pictures_to_run
from hrssm.train_config import TrainConfig
from hrssm.trainer import train
from hrssm.world_model import WorldModel

ROOT = Path(__file__).resolve().parents[1]


def _say(msg: str) -> None:
    print(f"      {msg}", flush=True)


# the other features probed beside the latents, from the same encoding pass: name -> what the printout calls them
ALSO = {"global": "The global level alone, [h, p(z)] (the latents without the local cells)",
        "tokens": "The encoder's mean patch token (what SimCLR trains; the global posterior reads it)"}


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = config_parser(__doc__, argv)
    p.set_defaults(config=str(ROOT / "recipes" / "configs" / "demo.yaml"))
    p.add_argument("--fresh", action="store_true", help="delete the run in the run folder and train from scratch")
    args, overrides = p.parse_known_args(argv)
    start = time.perf_counter()
    cfg = TrainConfig.load(args.config, overrides)
    if args.print_config:
        print_config(cfg)
        return 0
    out = Path(cfg.output_dir)
    size = max(64, cfg.model_config().image_size)  # the twin is made at 64 px at least; the model resizes it

    data = Path(cfg.data.source)
    if not data.exists():
        print(f"[1/5] generating the synthetic Waterbirds twin ({size}x{size}) in {data}", flush=True)
        synthetic.write_save_to_disk(synthetic.generate(size, 1.0, seed=0, progress=False), data)
    else:
        print(f"[1/5] using {data}", flush=True)

    print(f"[2/5] training {args.config} -> {out} ({cfg.optim.max_steps} steps)", flush=True)
    result = train(cfg, resume=not args.fresh, overwrite=args.fresh)

    print(f"[3/5] loading the export {result.export_dir}", flush=True)
    model = WorldModel.from_pretrained(result.export_dir)

    print("[4/5] evaluating: encode train / validation / test, probes, pictures", flush=True)
    images = sorted((out / "images").glob("*.png"))
    intro = [f"Model: preset `{cfg.model.get('preset', 'tiny')}`, {result.step} training steps on "
             f"`{cfg.data.source}` (config: `config.yaml`, metrics: `metrics.jsonl`, export: `export/`).", ""]
    if images:
        intro += ["Training views at the last logged step: per sample, input views | reconstructions | prior "
                  "imagination from the first state (no-op actions):", "",
                  f"![training views]({images[-1].relative_to(out)})", ""]
    ev = evaluate_model(model, data, out, report_intro=intro, also=tuple(ALSO),
                        extra_json={"train_steps": result.step, "train_metrics": result.metrics}, progress=_say)

    add_evaluation(result.export_dir, json.loads((out / "eval.json").read_text()), out, data=str(data))
    log_pictures_to_run(out, {f"eval/{Path(f).stem}": out / f for f in ev.pictures.values()}, result.step)

    print("[5/5] results\n\n" + ev.table + "\n")
    for name, other in ev.also.items():
        print(f"{ALSO[name]} (`encode(features=\"{name}\")`; {out / f'eval_{name}'}), same probes and splits:\n\n"
              f"{floors_table(other.floors)}\n\nBird, DFR worst group: {other.margin:+.3f} over the best floor.\n")
    print(f"report: {out / 'report.md'}   pictures: {', '.join(ev.pictures.values())} in {out}/")
    print(f"main job done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
