#!/usr/bin/env python
"""The concepts example of docs/concepts.md, in one command, on the demo model (run `python recipes/demo.py` first):

    python tools/concept_demo.py [--model runs/demo/export] [--out docs/concepts]

1. TCAV: does a water background (concept place=1) drive the bird probe's logit? (demo model, train-fit probe)
2. CAV edits: move test latents along the water-vs-land CAV and decode them (demo model)
3. Action edits: trains the studies' base config (recipes/configs/studies_base.yaml, at the demo model's image
   size) with views.mode=edit (runs/demo_edit, ~5 min once, reused afterwards), whose action +1 / -1 sets the
   background to water / land, and runs the action through the prior (`imagine`)
4. Measures both edits on every test image: does the decoded edit show the other background (place probe on the
   re-encoded image) and keep the bird (a place-balanced bird probe, fit on train images and their counterfactuals)?
5. Planner: CEM over the edit action per test image, in imagination (edit-trained model), reward = -|place logit|
   + log p(the DFR bird probe keeps its call): the probes' worst-group accuracy on edited vs original test latents
Writes <out>/edits.png, tcav.png, concepts.json and concepts.md (the tables).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hrssm.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/demo/export", help="the demo model's export")
    p.add_argument("--data", default="data/synthetic_waterbirds_64", help="the synthetic twin it was trained on")
    p.add_argument("--edit-run", default="runs/demo_edit", help="run folder of the edit-action model")
    p.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "studies_base.yaml"))
    p.add_argument("--out", default="docs/concepts")
    p.add_argument("--runs", type=int, default=20, help="random sets for TCAV")
    args, overrides = p.parse_known_args(argv)

    import hrssm
    from hrssm.data import GROUP_NAMES, LABEL_NAMES, SPLITS, WaterbirdsDataError, load_waterbirds, preprocess
    from hrssm.data.counterfactual import add_counterfactuals
    from hrssm.train_config import TrainConfig
    from hrssm.trainer import train

    try:
        demo = hrssm.load_world_model(args.model).eval()
        splits = {s: load_waterbirds(args.data, s, **demo.cfg.preprocessing()) for s in SPLITS}
    except (hrssm.ExportError, WaterbirdsDataError, FileNotFoundError) as err:
        raise hrssm.HrssmError(f"{err} (the concepts example needs the main job's model: run "
                               "`python recipes/demo.py`)") from err
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/5] training (or reusing) the edit-action model in {args.edit_run}", flush=True)
    # the edit model sees and decodes images at the demo model's size, so both edits are measured alike
    cfg = TrainConfig.load(args.config, ["--output_dir", args.edit_run, "--data.source", args.data,
                                         "--views.mode", "edit", "--log.progress", "false",
                                         "--model.image_size", str(demo.cfg.image_size), *overrides])
    editor = train(cfg, resume=True).model.eval()

    print("[2/5] features and probes", flush=True)
    from hrssm.evaluation import dfr_probe, fit_logistic, train_probe
    from hrssm.latents import dataset_latents

    feats = {s: dataset_latents(demo, ds, progress=False) for s, ds in splits.items()}
    tr, va, te = feats["train"], feats["validation"], feats["test"]
    shortcut = train_probe(tr, va, te, "label")

    print("[3/5] TCAV of a water background for the bird probe", flush=True)
    from hrssm.concepts import concept_cavs, learn_cav, linear_logit_fn, tcav_by_class
    from hrssm.plots import tcav_bars

    cavs, nulls = concept_cavs(tr["features"][tr["place"] == 1], tr["features"][tr["place"] == 0], args.runs)
    tcav_rows = tcav_by_class(linear_logit_fn(shortcut.probe), te["features"], te["label"], LABEL_NAMES, cavs, nulls)
    tcav_bars(tcav_rows, out / "tcav.png", "a water background", "Does a water background raise the class logit?")

    print("[4/5] CAV edits and action edits on the test images", flush=True)
    test = splits["test"]
    cf_test = add_counterfactuals(test, "test", cfg.data.synthetic_seed)
    place = np.asarray(test["place"])
    state = _state_features(tr)  # edits move the decodable state (z one-hot), so the CAV is learned there
    water_cav = learn_cav(state[tr["place"] == 1], state[tr["place"] == 0])
    direction = torch.as_tensor(np.where(place == 0, 1.0, -1.0))  # towards the other background
    size = demo.cfg.image_size
    cf_train = add_counterfactuals(splits["train"], "train", cfg.data.synthetic_seed)
    cf_images = preprocess(cf_test["counterfactual"], size)
    measures, pictures = {}, {}
    for name, model in (("CAV edit (demo model)", demo), ("action edit (edit-trained model)", editor)):
        f_cf = np.concatenate([_encode(model, cf_train[c]) for c in ("image", "counterfactual")])
        places = np.r_[cf_train["place"], 1 - np.asarray(cf_train["place"])]
        p_probe = fit_logistic(f_cf, places)
        b_probe = fit_logistic(f_cf, np.r_[cf_train["label"], cf_train["label"]])  # background-balanced bird
        recon, edited = _edit_and_decode(model, test, direction, water_cav if model is demo else None, size)
        f_rec, f_edit = _encode(model, recon), _encode(model, edited)
        measures[name] = {
            "background flipped (place probe on the re-encoded edit)": float((p_probe.predict(f_edit) != place).mean()),
            "background kept without the edit (reconstruction)": float((p_probe.predict(f_rec) == place).mean()),
            "bird probe call kept": float((b_probe.predict(f_edit) == b_probe.predict(f_rec)).mean()),
            "MSE to the true counterfactual": float(((edited - cf_images) ** 2).mean()),
            "MSE of the unedited reconstruction to it": float(((recon - cf_images) ** 2).mean()),
        }
        pictures[name] = (recon, edited)

    print("[5/5] planning edit actions in imagination: remove the background, keep the bird", flush=True)
    ed = {sp: dataset_latents(editor, ds, progress=False) for sp, ds in splits.items()}
    for arrays in ed.values():  # the planner scores edited states: its probes are fit on states too
        arrays["features"] = _state_features(arrays)
    e_place = train_probe(ed["train"], ed["validation"], ed["test"], "place").probe
    e_short = train_probe(ed["train"], ed["validation"], ed["test"], "label")
    e_dfr = dfr_probe(ed["train"], ed["validation"], ed["test"], "label", seeds=(0,))
    plan_rows, amounts = _plan_actions(editor, ed, e_place, e_short.probe, e_dfr.probe)
    idx = [int(i) for g in range(len(GROUP_NAMES)) for i in np.flatnonzero(np.asarray(test["group"]) == g)[:2]]
    x = preprocess([test[i]["image"] for i in idx], size)
    rows = [x, pictures["CAV edit (demo model)"][0][idx], pictures["CAV edit (demo model)"][1][idx],
            pictures["action edit (edit-trained model)"][0][idx], pictures["action edit (edit-trained model)"][1][idx],
            cf_images[idx]]
    from hrssm.viz import image_grid

    image_grid(torch.stack(rows)).resize((len(idx) * 66 * 2, len(rows) * 66 * 2)).save(out / "edits.png")

    md = _markdown(tcav_rows, measures, plan_rows, amounts, GROUP_NAMES, args)
    (out / "concepts.md").write_text(md)
    (out / "concepts.json").write_text(json.dumps({
        "tcav": tcav_rows, "edits": measures,
        "planner": plan_rows, "planner_mean_abs_amount": float(np.abs(amounts).mean()),
    }, indent=2))
    print("\n" + md)
    print(f"wrote {out}/edits.png, tcav.png, concepts.json, concepts.md")
    return 0


def _state_features(arrays: dict) -> np.ndarray:
    """(N, D) [h, z, s] of `dataset_latents` arrays with z one-hot: the decodable state that edits move
    (`latents_to_features`), where `encode` has z's class probabilities."""
    from hrssm.concepts import latents_to_features

    lat = {k: torch.from_numpy(arrays[k]) for k in ("h", "z", "s") if arrays[k].size}
    return latents_to_features(lat).numpy()


def _encode(model, images, batch: int = 256) -> np.ndarray:
    """Features of a list of PIL images or a (N, 3, H, W) tensor, in batches."""
    return np.concatenate([model.encode(images[i : i + batch]).numpy() for i in range(0, len(images), batch)])


@torch.no_grad()
def _edit_and_decode(model, ds, direction, cav, size, batch: int = 256):
    """Reconstructions and edited decodes of every image of `ds`: along `cav` (amount +-1) or by the action."""
    from hrssm.concepts import edit_along_cav, edit_by_action
    from hrssm.data import preprocess

    recon, edited = [], []
    for i in range(0, len(ds), batch):
        x = preprocess(ds[i : i + batch]["image"], size)
        lat = model.encode_latents(x)
        d = direction[i : i + batch]
        new = edit_along_cav(lat, cav, d) if cav is not None else edit_by_action(model, lat, d)
        for store, v in ((recon, lat), (edited, new)):
            store.append(model.decode(v["h"], v["z"].to(v["h"].dtype), v.get("s")).clamp(-0.5, 0.5).float())
    return torch.cat(recon), torch.cat(edited)


@torch.no_grad()
def _plan_actions(editor, ed: dict, place_probe, shortcut_probe, dfr_probe) -> tuple[dict, np.ndarray]:
    """Probes on the edit model's test latents after fixed edit actions and after CEM-planned ones."""
    from hrssm.concepts import concept_removal_reward, edit_by_action, latents_to_features, linear_logit_fn, plan_edits
    from hrssm.evaluation import group_accuracies

    tr, te = ed["train"], ed["test"]
    lat = {"h": torch.from_numpy(te["h"]), "z": torch.from_numpy(te["z"]), "s": torch.from_numpy(te["s"])}
    lat = {k: v for k, v in lat.items() if v.numel()}
    keep = torch.as_tensor(dfr_probe.predict(te["features"]))  # the bird call before editing (no labels used)
    place_logit, bird_logit = linear_logit_fn(place_probe), linear_logit_fn(dfr_probe)

    def features(a) -> torch.Tensor:
        return latents_to_features(edit_by_action(editor, lat, a)).double()

    def reward(a):
        return concept_removal_reward(features(a.float()), place_logit, bird_logit, keep)

    amounts, _ = plan_edits(reward, batch=len(keep), low=-1.5, high=1.5, population=24, iterations=5)
    settings = {"no edit (posterior)": torch.from_numpy(te["features"]).double(), "no-op action (0)": features(0.0),
                "all to water (+1)": features(1.0), "all to land (-1)": features(-1.0),
                "planned (CEM)": features(amounts.float())}
    rows = {}
    for name, f in settings.items():
        x = f.numpy()
        row = {"place probe accuracy": float((place_probe.predict(x) == te["place"]).mean())}
        for probe_name, probe in (("bird, fit on train", shortcut_probe), ("bird, DFR", dfr_probe)):
            r = group_accuracies(probe.predict(x), te["label"], te["group"], tr["group"])
            row[probe_name] = {"average": r.average, "worst_group": r.worst_group, "per_group": r.per_group}
        rows[name] = row
    return rows, amounts.numpy()


def _markdown(tcav_rows, measures, plan_rows, amounts, group_names, args) -> str:
    lines = [f"Made by `python tools/concept_demo.py` (model `{args.model}`, data `{args.data}`).", "",
             "TCAV of a water background (train images with place=1 vs place=0, "
             f"{args.runs} random sets) for the bird probe fit on train:", "",
             "| class | TCAV score | random CAVs | p | significant | CAV held-out accuracy |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['class']} | {r['score']:.2f} | {r['random_mean']:.2f} | {r['p_value']:.2g} | "
              f"{'yes' if r['significant'] else 'no'} | {r['cav_accuracy']:.3f} |" for r in tcav_rows]
    keys = list(next(iter(measures.values())))
    lines += ["", "Edits to the other background, on every test image:", "",
              "| edit | " + " | ".join(keys) + " |", "| --- | " + " | ".join("---" for _ in keys) + " |"]
    lines += [f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + " |" for name, m in measures.items()]
    lines += ["", f"Edit actions in imagination (edit-trained model, every test image; planned: CEM over the action "
              f"per image, mean |action| {np.abs(amounts).mean():.2f}, reward -|place logit| + log p(DFR bird call "
              "kept)):", "",
              "| latents | place probe accuracy | bird fit on train: avg | worst group | bird DFR: avg | worst group |"
              " bird fit on train, per group (" + ", ".join(group_names) + ") |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in plan_rows.items():
        a, d = r["bird, fit on train"], r["bird, DFR"]
        lines.append(f"| {name} | {r['place probe accuracy']:.3f} | {a['average']:.3f} | {a['worst_group']:.3f} | "
                     f"{d['average']:.3f} | {d['worst_group']:.3f} | "
                     + ", ".join(f"{v:.3f}" for v in a["per_group"]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
