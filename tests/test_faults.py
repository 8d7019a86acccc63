"""Fault injection: signals, truncations, deletions, concurrent runs, crafted pickles, hostile paths, NaN inputs, and
every known failure of a script as one line with exit code 2 (issue 15).

Each test is one fault a user (or a crash, or a hostile file) can cause; tiny runs (32 px, a few steps)."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BASE_CONFIG, ROOT, digest, tiny_run
from PIL import Image
from recipes_loader import load_recipe, load_tool

import hrssm
from hrssm import trainer as trainer_mod
from hrssm.checkpoint import checkpoints, latest_checkpoint
from hrssm.config import ModelConfig
from hrssm.data import WaterbirdsDataError, load_waterbirds, preprocess
from hrssm.latents import decode_latents, load_latents
from hrssm.train_config import TrainConfig
from hrssm.trainer import TrainingInterrupted, train
from hrssm.world_model import WorldModel


def _cfg(data, out, *extra):
    return TrainConfig.load(BASE_CONFIG, tiny_run(data, out, "--collapse.warmup_steps", "1000", *extra))


def _script(kind: str, name: str, *args: str, capsys) -> tuple[int, str]:
    """(exit code, stderr) of a recipe or tool's main run in this process."""
    main = (load_recipe if kind == "recipe" else load_tool)(name).main
    code = main(list(args))
    return code, capsys.readouterr().err


def _error_line(err: str) -> str:
    """The one line a script printed for a known error (the last stderr line; warnings may come before)."""
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err[-2000:]
    return line


def _stop_at(step: int, how=None):
    """A replacement for trainer._stop_requested that stops the loop at the end of `step` (after `how()`)."""
    real, calls = trainer_mod._stop_requested, {"n": 0}

    def stop(accelerator, stop_signal):
        calls["n"] += 1
        if calls["n"] == step:
            if how is None:
                return True
            how()
        return real(accelerator, stop_signal)

    return stop


# -- 1. nothing in a run folder is unpickled on resume -----------------------------------------------------------


class _Exploit:
    """A pickle that, when loaded with pickle's full powers, creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _rewrite_manifest(ckpt: Path) -> None:
    """What an attacker who can write the run folder can also do: make the manifest match the planted file."""
    from hrssm.checkpoint import _write_manifest

    _write_manifest(ckpt, int(ckpt.name.split("_")[1]))


def test_a_json_write_that_fails_leaves_the_last_good_file(tmp_path):
    from hrssm._io import atomic_write_json

    path = atomic_write_json(tmp_path / "new" / "result.json", {"acc_wg": 0.5})  # its folder is made
    assert json.loads(path.read_text()) == {"acc_wg": 0.5}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"acc_wg": object()})  # not JSON: nothing is written
    assert json.loads(path.read_text()) == {"acc_wg": 0.5} and os.listdir(path.parent) == ["result.json"]


def test_a_crafted_pickle_in_a_checkpoint_never_runs_on_resume(synthetic_disk, tmp_path, monkeypatch):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    monkeypatch.setattr(trainer_mod, "_stop_requested", _stop_at(4))
    with pytest.raises(TrainingInterrupted):
        train(_cfg(synthetic_disk, out, "--checkpoint.every", "2"))
    monkeypatch.undo()
    newest = latest_checkpoint(out / "checkpoints")
    torch.save(_Exploit(marker), newest / "custom_checkpoint_0.pkl")  # what Accelerate unpickles for registered state
    resumed = train(_cfg(synthetic_disk, out, "--checkpoint.every", "2"), resume=True)
    assert not marker.exists()
    assert resumed.step == 6

    # even when the manifest is made to match, the only pickles hrssm loads go through weights_only
    newest = latest_checkpoint(out / "checkpoints")
    torch.save(_Exploit(marker), newest / "optimizer.bin")
    _rewrite_manifest(newest)
    with pytest.raises(hrssm.HrssmError, match="safe loader refuses"):
        train(_cfg(synthetic_disk, out, "--optim.max_steps", "8", "--checkpoint.every", "2"), resume=True)
    assert not marker.exists()


def test_a_checkpoint_holds_no_pickle_but_the_optimizer_state(synthetic_disk, tmp_path):
    train(_cfg(synthetic_disk, tmp_path / "run"))
    for _, ckpt in checkpoints(tmp_path / "run" / "checkpoints"):
        assert sorted(p.name for p in ckpt.iterdir()) == ["manifest.json", "model.safetensors", "optimizer.bin",
                                                           "process_0.safetensors", "trainer_state.json"]


# -- 2. one run per folder ------------------------------------------------------------------------------------------


def _running_training(data, out) -> subprocess.Popen:
    """A long training run in another process, returned once it has logged a step."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "train_hrssm.py"), "--config", str(BASE_CONFIG),
                             *tiny_run(data, out, "--optim.max_steps", "100000", "--checkpoint.every", "100000")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 180
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    return proc


@pytest.mark.slow
def test_a_second_run_in_a_folder_in_use_refuses_naming_the_first(synthetic_disk, tmp_path, capsys):
    out = tmp_path / "run"
    first = _running_training(synthetic_disk, out)
    try:
        code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG),
                            *tiny_run(synthetic_disk, out, "--optim.max_steps", "4"), "--resume", capsys=capsys)
        assert code == 2
        assert f"in use by another training run (pid {first.pid} on host" in _error_line(err)
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 143, first_err[-2000:]  # SIGTERM: a checkpoint, then 128 + 15
    assert "stopped by SIGTERM" in first_err and latest_checkpoint(out / "checkpoints") is not None
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # one writer: no interleaved or repeated rows
    assert not (out / "run.lock").exists()  # released on the way out


def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_warning(synthetic_disk, tmp_path, caplog):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "since": "earlier"}))
    with caplog.at_level("WARNING", logger="hrssm"):
        res = train(_cfg(synthetic_disk, out), resume=True)
    assert res.step == 6
    assert f"no longer running (pid {dead.pid}" in caplog.text
    assert not (out / "run.lock").exists()


# -- 3. a finished run folder is not trained into by accident ----------------------------------------------------


def test_a_new_run_into_a_used_folder_is_refused_unless_resume_or_overwrite(synthetic_disk, tmp_path, capsys):
    out = tmp_path / "run"
    first = train(_cfg(synthetic_disk, out, "--seed", "1"))
    export_digest = digest(WorldModel.from_pretrained(out / "export"))
    code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG), *tiny_run(synthetic_disk, out),
                        capsys=capsys)
    assert code == 2 and "is not empty" in _error_line(err) and "--resume" in err and "--overwrite" in err
    assert digest(WorldModel.from_pretrained(out / "export")) == export_digest  # untouched
    second = train(_cfg(synthetic_disk, out), overwrite=True)
    assert digest(second.model) != digest(first.model)
    assert [s for s, _ in checkpoints(out / "checkpoints")] == [3, 6]  # only the new run's
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_overwrite_refuses_a_folder_that_holds_no_run(synthetic_disk, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(hrssm.HrssmError, match="holds no run"):
        train(_cfg(synthetic_disk, out), overwrite=True)
    assert (out / "thesis.tex").read_text() == "precious"


# -- 4. checkpoints verify themselves ------------------------------------------------------------------------------


def _rng_file(ckpt: Path) -> Path:
    return next(p for p in ckpt.iterdir() if p.name.startswith(("random_states_", "process_")))


@pytest.mark.parametrize("damage", ["delete the RNG states", "delete model.safetensors", "truncate optimizer.bin"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_good_one(damage, synthetic_disk, tmp_path,
                                                                          monkeypatch, capsys):
    full = train(_cfg(synthetic_disk, tmp_path / "full", "--checkpoint.every", "2"))
    out = tmp_path / "cut"
    monkeypatch.setattr(trainer_mod, "_stop_requested", _stop_at(4))
    with pytest.raises(TrainingInterrupted):
        train(_cfg(synthetic_disk, out, "--checkpoint.every", "2"))
    monkeypatch.undo()
    newest = latest_checkpoint(out / "checkpoints")
    assert newest.name == "step_00000004"
    if damage == "delete the RNG states":
        victim = _rng_file(newest)
        victim.unlink()
    elif damage == "delete model.safetensors":
        victim = newest / "model.safetensors"
        victim.unlink()
    else:
        victim = newest / "optimizer.bin"
        victim.write_bytes(victim.read_bytes()[:1000])
    capsys.readouterr()
    resumed = train(_cfg(synthetic_disk, out, "--checkpoint.every", "2"), resume=True)
    printed = capsys.readouterr().out
    assert f"checkpoint {newest} is skipped: {victim.name}" in printed
    assert "step_00000002 (step 2)" in printed
    assert digest(resumed.model) == digest(full.model)  # same randomness, same weights


def test_no_good_checkpoint_is_a_clear_error(synthetic_disk, tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(synthetic_disk, out))
    for _, ckpt in checkpoints(out / "checkpoints"):
        (ckpt / "model.safetensors").unlink()
    code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG), *tiny_run(synthetic_disk, out),
                        "--resume", capsys=capsys)
    line = _error_line(err)
    assert code == 2 and "no checkpoint in" in line and "step_00000006: model.safetensors is missing" in line


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64 vs 0")])
def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one_and_says_so(failure, synthetic_disk, tmp_path,
                                                                             monkeypatch):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "step_00000006" in str(f):  # the second checkpoint
            Path(f).write_bytes(b"half")
            raise failure
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    with pytest.raises(hrssm.HrssmError, match=r"the disk is full: .*step_00000006.* the last good checkpoint, "
                                               r".*step_00000003, is kept"):
        train(_cfg(synthetic_disk, out))
    monkeypatch.undo()
    assert [s for s, _ in checkpoints(out / "checkpoints")] == [3]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert train(_cfg(synthetic_disk, out), resume=True).step == 6


# -- 5., 6. images: 16-bit, NaN, empty -------------------------------------------------------------------------------


def _sixteen_bit_gradient() -> Image.Image:
    values = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    return Image.fromarray(values)  # mode I;16


def _folder(root: Path, names: list[str], image: Image.Image | None = None) -> Path:
    """An original-layout Waterbirds folder whose train rows list `names` (images written where they point)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for i, name in enumerate(names):
        path = Path(name) if Path(name).is_absolute() else root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (image or Image.new("RGB", (40, 40), (i * 40, 90, 30))).save(path)
        lines.append(f"{i},{name},{i % 2},0,{i % 2},x")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_a_16_bit_png_is_scaled_to_8_bits_not_white(tmp_path):
    im = _sixteen_bit_gradient()
    expected = np.asarray(im, dtype=np.float64).mean() / 257
    im.save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    encoded = preprocess(Image.open(tmp_path / "g.png"), 48)
    assert abs((float(encoded.mean()) + 0.5) * 255 - expected) < 1
    folder = _folder(tmp_path / "wb", ["a.png", "b.png"], image=im)
    for size in (None, 32):
        ds = load_waterbirds(folder, "train", image_size=size, cache_dir=tmp_path / "cache")
        pixels = np.asarray(ds[0]["image"], dtype=np.float64)
        assert abs(pixels.mean() - expected) < 2, (size, pixels.mean())


def test_nan_pixels_are_refused_naming_the_rows():
    model = WorldModel(ModelConfig.preset("tiny", image_size=32))
    images = torch.zeros(4, 3, 32, 32)
    images[2, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"rows? 2 \(of 4\) hold NaN"):
        model.encode(images)
    with pytest.raises(ValueError, match="empty batch"):
        model.encode(torch.zeros(0, 3, 32, 32))


# -- 7. latents belong to their weights, and must be finite ----------------------------------------------------------


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """Exports of two random-init models of the same config (seed 0 and 1)."""
    root = tmp_path_factory.mktemp("exports")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(hrssm.export(WorldModel(ModelConfig.preset("tiny", image_size=32)), root / f"seed{seed}"))
    return out


@pytest.fixture(scope="module")
def latents_file(two_exports, synthetic_disk, tmp_path_factory):
    path = tmp_path_factory.mktemp("latents") / "test.npz"
    assert load_tool("export_latents").main(["--model", str(two_exports[0]), "--data", str(synthetic_disk),
                                             "--split", "test", "--out", str(path)]) == 0
    return path


def test_latents_of_another_model_with_the_same_config_are_refused(two_exports, latents_file, tmp_path, capsys):
    capsys.readouterr()
    code, err = _script("tool", "decode_latents", str(latents_file), "--model", str(two_exports[1]), "--out",
                        str(tmp_path / "grid.png"), capsys=capsys)
    assert code == 2 and "encoded by other weights" in _error_line(err) and not (tmp_path / "grid.png").exists()
    code, _ = _script("tool", "decode_latents", str(latents_file), "--model", str(two_exports[0]), "--out",
                      str(tmp_path / "grid.png"), capsys=capsys)
    assert code == 0


def test_nan_latents_are_refused_naming_the_rows(two_exports, latents_file):
    arrays, meta = load_latents(latents_file)
    arrays["s"][3, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"latents 's': row 3 \(of 5\) hold NaN"):
        decode_latents(hrssm.load_world_model(two_exports[0]), arrays, meta, n=5)


# -- 8. image paths stay inside the dataset folder --------------------------------------------------------------


def test_an_img_filename_outside_the_folder_is_refused_naming_the_row(tmp_path):
    outside = tmp_path / "elsewhere" / "secret.png"
    folder = _folder(tmp_path / "wb", ["ok.png", "../elsewhere/secret.png", str(outside), "sub/../ok2.png"])
    with pytest.raises(WaterbirdsDataError, match=r"2 row\(s\) point elsewhere: row 3 \('../elsewhere/secret.png'\), "
                                                  r"row 4 \('/"):
        load_waterbirds(folder, "train", cache_dir=tmp_path / "cache")


# -- one line and exit code 2 for every known failure ------------------------------------------------------------


@pytest.mark.parametrize("yaml_text, key", [
    ("optim: {lr: 1e-3\n", "not valid YAML at line"),
    ("optim: !!python/object/apply:os.system ['touch PWNED']\n", "no !!python tags"),
    ("optim: 5\n", "optim must be a mapping"),
    ("- a\n- b\n", "must hold a YAML mapping"),
])
def test_a_broken_config_file_is_one_line_naming_the_file(yaml_text, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    code, err = _script("recipe", "train_hrssm", "--config", str(config), capsys=capsys)
    assert code == 2 and key in _error_line(err) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("override, message", [
    (["--optim.betas", "0.9"], "optim.betas=0.9 must be a list of 2 values"),
    (["--views.crop_scale", "0.5"], "views.crop_scale=0.5 must be a list of 2 values"),
    (["--optim.min_lr_ratio", "abc"], "optim.min_lr_ratio='abc' must be a number"),
    (["--model.loss.ema_momentum", "abc"], "model.loss.ema_momentum='abc' must be a number"),
    (["--optim.lr", ".inf"], "optim.lr=inf must be"),
    (["--log.progress", "maybe"], "log.progress='maybe' must be true or false"),
    (["--data.split", "tran"], "data.split: unknown split 'tran'"),
])
def test_a_bad_value_is_one_line_naming_the_key(override, message, synthetic_disk, tmp_path, capsys):
    code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG),
                        *tiny_run(synthetic_disk, tmp_path / "run", *override), capsys=capsys)
    assert code == 2 and message in _error_line(err)


def test_one_tracker_name_is_a_list_of_one():
    assert TrainConfig.load(BASE_CONFIG, ["--log.trackers", "tensorboard"]).log.trackers == ["tensorboard"]


def test_a_diverging_learning_rate_stops_with_exit_4_and_a_checkpoint(synthetic_disk, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG),
                        *tiny_run(synthetic_disk, out, "--optim.lr", "1e8", "--optim.max_steps", "20",
                                  "--checkpoint.every", "100", "--collapse.max_nonfinite", "3"), capsys=capsys)
    assert code == 4 and "consecutive steps had a NaN/inf loss" in err.strip().splitlines()[-1]
    assert latest_checkpoint(out / "checkpoints") is not None


def test_bad_data_sources_are_one_line_naming_what_to_fix(synthetic_disk, tmp_path, capsys):
    def run(*extra):
        return _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG),
                       *tiny_run(synthetic_disk, tmp_path / f"run{len(list(tmp_path.iterdir()))}", *extra),
                       capsys=capsys)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "metadata.csv").write_bytes(bytes(range(256)) * 8)
    code, err = run("--data.source", str(garbage), "--data.cache_dir", str(tmp_path / "cache"))
    assert code == 2 and f"{garbage / 'metadata.csv'} cannot be read as CSV" in _error_line(err)

    from datasets import Dataset, DatasetDict

    names = DatasetDict({"train": Dataset.from_dict({"image": ["/etc/passwd"] * 8, "label": [0, 1] * 4,
                                                     "place": [0, 1] * 4})})
    names.save_to_disk(str(tmp_path / "names"))
    code, err = run("--data.source", str(tmp_path / "names"))
    assert code == 2 and "column 'image' of split 'train'" in _error_line(err) and "not images" in err

    cache_file = tmp_path / "cache_file"
    cache_file.write_text("")
    folder = _folder(tmp_path / "wb", [f"{i}.png" for i in range(8)])
    code, err = run("--data.source", str(folder), "--data.cache_dir", str(cache_file))
    assert code == 2 and f"the cache folder {cache_file}" in _error_line(err) and "is a file" in err

    out_file = tmp_path / "out_file"
    out_file.write_text("")
    code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG), *tiny_run(synthetic_disk, out_file),
                        capsys=capsys)
    assert code == 2 and f"output_dir {out_file} is a file" in _error_line(err)


def test_resuming_with_another_model_config_names_the_keys(synthetic_disk, tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(synthetic_disk, out))
    code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG),
                        *tiny_run(synthetic_disk, out, "--model.rssm.deter", "64"), "--resume", capsys=capsys)
    line = _error_line(err)
    assert code == 2 and "belongs to another run: model.rssm.deter: 128 in the checkpoint, 64 in this run" in line


def test_a_checkpoint_written_before_newer_model_keys_resumes(synthetic_disk, tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(synthetic_disk, out, "--optim.max_steps", "3"))
    states = list((out / "checkpoints").glob("*/trainer_state.json"))
    assert states
    for state in states:  # as an older hrssm wrote it: no encoder.pool, no loss.contrastive_* keys
        data = json.loads(state.read_text())
        model = data["identity"]["model"]
        del model["encoder"]["pool"], model["loss"]["contrastive_pairs"], model["loss"]["contrastive_input"]
        state.write_text(json.dumps(data))
        manifest = state.parent / "manifest.json"  # keep it verifying: only the identity is older
        m = json.loads(manifest.read_text())
        digest = hashlib.sha256(state.read_bytes()).hexdigest()
        m["files"][state.name] = {"bytes": state.stat().st_size, "sha256": digest}
        manifest.write_text(json.dumps(m))
    main = load_recipe("train_hrssm").main
    assert main(["--config", str(BASE_CONFIG), *tiny_run(synthetic_disk, out, "--optim.max_steps", "6"),
                 "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out


def _damaged_copy(export: Path, tmp_path: Path, name: str, content: bytes | None) -> Path:
    dst = tmp_path / f"damaged-{name}-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(export, dst)
    path = dst / name
    path.write_bytes(path.read_bytes()[:100] if content is None else content)
    return dst


@pytest.mark.parametrize("name, content, message", [
    ("encoder.safetensors", None, "encoder.safetensors cannot be read as safetensors"),
    ("model.safetensors", None, "model.safetensors cannot be read as safetensors"),
    ("config.json", b"{not json", "config.json is not valid JSON"),
    ("config.json", b"[1, 2]", "config.json holds a list, not a model config"),
    ("config.json", None, "config.json is not valid JSON"),
])
def test_a_damaged_export_is_one_line_naming_the_file(name, content, message, two_exports, synthetic_disk, tmp_path,
                                                      capsys):
    damaged = _damaged_copy(two_exports[0], tmp_path, name, content)
    if name == "model.safetensors":
        code, err = _script("recipe", "eval_probe", "--model", str(damaged), "--data", str(synthetic_disk),
                            "--out", str(tmp_path / "eval"), capsys=capsys)
    else:
        code, err = _script("tool", "export_latents", "--model", str(damaged), "--data", str(synthetic_disk),
                            "--out", str(tmp_path / "x.npz"), capsys=capsys)
    assert code == 2 and message in _error_line(err)


def test_a_non_integer_export_format_is_one_line(two_exports, tmp_path):
    config = json.loads((two_exports[0] / "config.json").read_text())
    damaged = _damaged_copy(two_exports[0], tmp_path, "config.json",
                            json.dumps({**config, "hrssm_format": "one"}).encode())
    with pytest.raises(hrssm.ExportError, match="config.json has hrssm_format='one', not an integer"):
        hrssm.load(damaged)


def _npz_variant(latents_file: Path, tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        path.write_bytes(latents_file.read_bytes()[:2000])
    elif kind == "not a zip":
        path.write_bytes(b"hello, this is not numpy")
    else:
        arrays, meta = load_latents(latents_file)
        if kind == "metadata not JSON":
            np.savez(path, metadata=np.array("{oops"), **arrays)
        else:  # no rows
            np.savez(path, metadata=np.array(json.dumps(meta)), **{k: v[:0] for k, v in arrays.items()})
    return path


@pytest.mark.parametrize("kind", ["truncated", "not a zip", "metadata not JSON", "no rows"])
def test_a_damaged_latents_file_is_one_line_naming_the_file(kind, two_exports, latents_file, tmp_path, capsys):
    path = _npz_variant(latents_file, tmp_path, kind)
    code, err = _script("tool", "decode_latents", str(path), "--model", str(two_exports[0]), "--out",
                        str(tmp_path / "grid.png"), capsys=capsys)
    assert code == 2 and str(path) in _error_line(err)


def test_every_script_maps_its_errors_in_the_one_shared_place():
    scripts = sorted([*(ROOT / "recipes").glob("*.py"), *(ROOT / "tools").glob("*.py")])
    for script in scripts:
        text = script.read_text()
        if "def main(" in text:
            assert "@cli_main\ndef main(" in text, f"{script.name}: decorate main with hrssm.cli.cli_main"
            assert "return 2" not in text, f"{script.name}: map errors in hrssm/cli.py, not in the script"


def test_unknown_errors_keep_their_traceback_known_ones_are_one_line(capsys):
    from hrssm.cli import cli_main
    from hrssm.errors import ConfigError

    @cli_main
    def main(error):
        raise error

    assert main(ConfigError("optim.lr=-1 must be a number > 0\n(second line)")) == 2
    assert capsys.readouterr().err == "error: optim.lr=-1 must be a number > 0 (second line)\n"
    assert main(OSError(errno.ENOSPC, "No space left on device", "/data/x")) == 2
    assert "the disk is full (/data/x)" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):
        main(ZeroDivisionError("a bug"))


# -- the log of an interrupted run equals the uninterrupted one ----------------------------------------------------

_LOG_RUN = ("--optim.max_steps", "8", "--log.every", "2", "--checkpoint.every", "3")


@pytest.fixture(scope="module")
def uninterrupted(synthetic_disk, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    res = train(_cfg(synthetic_disk, out, *_LOG_RUN))
    return (out / "metrics.jsonl").read_text(), digest(res.model)


def test_the_log_of_a_run_stopped_by_sigterm_then_resumed_equals_the_uninterrupted_one(
        uninterrupted, synthetic_disk, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(trainer_mod, "_stop_requested", _stop_at(5, lambda: signal.raise_signal(signal.SIGTERM)))
    code, err = _script("recipe", "train_hrssm", "--config", str(BASE_CONFIG), *tiny_run(synthetic_disk, out, *_LOG_RUN,
                        "--collapse.warmup_steps", "1000"), capsys=capsys)
    assert code == 143 and "stopped by SIGTERM at step 5" in err
    monkeypatch.undo()
    resumed = train(_cfg(synthetic_disk, out, *_LOG_RUN), resume=True)
    assert (out / "metrics.jsonl").read_text() == uninterrupted[0]
    assert digest(resumed.model) == uninterrupted[1]


@pytest.mark.slow
def test_the_log_of_a_run_killed_with_sigkill_then_resumed_equals_the_uninterrupted_one(
        uninterrupted, synthetic_disk, tmp_path):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_worker.py"), "5", "KILL", "--config",
                             str(BASE_CONFIG), *tiny_run(synthetic_disk, out, *_LOG_RUN,
                                                         "--collapse.warmup_steps", "1000")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    assert (out / "run.lock").exists()  # left behind by the killed run: stale
    resumed = train(_cfg(synthetic_disk, out, *_LOG_RUN), resume=True)
    assert (out / "metrics.jsonl").read_text() == uninterrupted[0]
    assert digest(resumed.model) == uninterrupted[1]
