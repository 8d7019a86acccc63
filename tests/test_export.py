"""Export and reuse: folder layout, hrssm.load / load_world_model, latents .npz round trip, hub push, bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_run
from PIL import Image
from recipes_loader import load_tool

import hrssm
from hrssm.data import load_waterbirds, preprocess
from hrssm.diagnostics import image_metrics
from hrssm.export import FORMAT_VERSION, ExportError
from hrssm.latents import config_hash, dataset_latents, decode_latents, load_latents, model_hashes, save_latents
from hrssm.train_config import TrainConfig
from hrssm.trainer import train
from hrssm.world_model import WorldModel


@pytest.fixture(scope="module")
def trained(synthetic_disk, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    cfg = TrainConfig.load(None, tiny_run(
        synthetic_disk, out, "--optim.batch_size", "16", "--optim.max_steps", "300", "--optim.warmup_steps", "20",
        "--log.every", "50", "--log.images_every", "1000", "--checkpoint.every", "1000"))
    res = train(cfg)
    return res, out / "export"


def _images(synthetic_disk, split="test", n=12):
    return load_waterbirds(synthetic_disk, split)[:n]["image"]


def test_export_folder_and_bit_identical_features(trained, synthetic_disk):
    res, export = trained
    assert sorted(p.name for p in export.iterdir()) == ["README.md", "config.json", "encoder.safetensors",
                                                        "model.safetensors"]
    assert json.loads((export / "config.json").read_text())["hrssm_format"] == FORMAT_VERSION
    assert "recon_std_ratio" in (export / "README.md").read_text()
    enc = hrssm.load(export)
    x = preprocess(_images(synthetic_disk), 32)
    model = res.model.eval()
    with torch.no_grad():
        traj = model.observe(x[:, None], torch.zeros(len(x), 1, 1), sample=False)
    probs = traj.post_global[:, 0].exp().flatten(-2)  # (B, stoch * classes): the global posterior's probabilities
    ref = model.rssm.features(traj.h[:, 0], probs, traj.s[:, 0])
    feats = enc.encode(x)
    assert feats.shape == (len(x), enc.feature_dim) and torch.equal(feats, ref)
    lat = enc.encode_latents(x)
    assert set(lat) == {"h", "z", "z_probs", "s"} and lat["s"].shape == (len(x), 16, 64)
    assert torch.equal(lat["z"], traj.z[:, 0]) and torch.equal(lat["z_probs"], probs)  # z: the mode the decoder reads
    stoch, classes = model.cfg.rssm.stoch, model.cfg.rssm.classes
    p = probs.unflatten(-1, (stoch, classes))
    torch.testing.assert_close(p.sum(-1), torch.ones(len(x), stoch))
    assert torch.equal(lat["z"].unflatten(-1, (stoch, classes)).argmax(-1), p.argmax(-1))
    assert not torch.equal(probs, lat["z"])  # the features keep how sure the posterior is, not only which class won
    glob = enc.encode(x, features="global")  # the global level: the latents without the local cells
    assert glob.shape == (len(x), model.cfg.rssm.deter + stoch * classes) and torch.equal(glob, ref[:, :glob.shape[1]])


def test_encode_tokens_is_the_trained_encoders_mean_patch_token(trained, synthetic_disk):
    res, export = trained
    enc = hrssm.load(export)
    x = preprocess(_images(synthetic_disk), 32)
    with torch.no_grad():
        ref = res.model.eval().encoder(x)[1].mean(1)  # (B, width)
    tokens = enc.encode(x, features="tokens")
    assert tokens.shape == (len(x), res.model.cfg.encoder.width) and torch.equal(tokens, ref)
    assert torch.equal(enc.encode_latents(x, tokens=True)["tokens"], ref)
    assert torch.equal(enc.encode(x, features="latents"), enc.encode(x))
    with pytest.raises(ValueError, match=r"features must be one of \('latents', 'global', 'tokens'\).*got 'cls'"):
        enc.encode(x, features="cls")


def test_run_folder_and_from_pretrained_round_trip(trained):
    res, export = trained
    for loaded in (WorldModel.from_pretrained(export), hrssm.load_world_model(export.parent)):
        assert loaded.cfg == res.model.cfg
        for (k, a), (_, b) in zip(loaded.state_dict().items(), res.model.state_dict().items()):
            assert torch.equal(a, b), k


def test_uint8_and_float_input_agree(trained, synthetic_disk):
    enc = hrssm.load(trained[1])
    pil = _images(synthetic_disk, n=6)
    u8 = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in pil])
    ref = enc.encode(u8)
    assert torch.equal(enc.encode(preprocess(u8, 32)), ref)
    assert torch.equal(enc.encode(pil), ref)
    big = [im.resize((48, 48), Image.Resampling.BICUBIC) for im in pil]  # other sizes are resized like training
    assert enc.encode(big).shape == ref.shape


def test_latents_npz_decode_exactly_like_in_memory_latents(trained, synthetic_disk, tmp_path):
    res, export = trained
    assert load_tool("export_latents").main(["--model", str(export), "--data", str(synthetic_disk), "--split", "test",
                                             "--out", str(tmp_path / "lat.npz")]) == 0
    arrays, meta = load_latents(tmp_path / "lat.npz")
    ds = load_waterbirds(synthetic_disk, "test")
    assert arrays["features"].shape[0] == len(ds) and arrays["img_id"].tolist() == ds["img_id"]
    assert meta["config_hash"] == config_hash(res.model.cfg) and meta["preprocessing"]["image_size"] == 32
    enc = hrssm.load(export)
    lat = enc.encode_latents(ds[:20]["image"])
    with torch.no_grad():
        direct = res.model.eval().decode(lat["h"], lat["z"], lat["s"])
    from_file = decode_latents(hrssm.load_world_model(export), arrays, meta, n=20)
    assert torch.equal(from_file, direct)
    assert load_tool("decode_latents").main([str(tmp_path / "lat.npz"), "--model", str(export), "--out",
                                             str(tmp_path / "grid.png"), "--n", "10"]) == 0
    assert Image.open(tmp_path / "grid.png").size[1] > 32  # two rows of 8 (the last one padded)


def test_decoded_npz_of_a_trained_model_matches_training_reconstructions(trained, synthetic_disk, tmp_path):
    res, export = trained
    ds = load_waterbirds(synthetic_disk, "train")
    arrays = dataset_latents(hrssm.load(export), ds, progress=False)
    save_latents(tmp_path / "train.npz", arrays, model_hashes(res.model))
    decoded = decode_latents(hrssm.load_world_model(export), *load_latents(tmp_path / "train.npz"))
    ratio = float(image_metrics(decoded, preprocess(ds["image"], 32))["recon_std_ratio"])
    trained_ratio = res.metrics["recon_std_ratio"]
    assert trained_ratio > 0.7, res.metrics  # the training itself did not collapse
    assert abs(ratio - trained_ratio) / trained_ratio < 0.05, (ratio, trained_ratio)


def test_latents_files_that_name_the_local_array_local_still_load(tmp_path):
    arrays = {"features": np.ones((2, 5), np.float32), "h": np.ones((2, 2), np.float32),
              "z": np.ones((2, 3), np.float32), "s": np.arange(8, dtype=np.float32).reshape(2, 2, 2)}
    arrays.update({k: np.zeros(2, np.int64) for k in ("label", "place", "group", "img_id")})
    old = {("local" if k == "s" else k): v for k, v in arrays.items()}
    np.savez(tmp_path / "old.npz", metadata=np.array(json.dumps({"config_hash": "0000"})), **old)
    loaded, meta = load_latents(tmp_path / "old.npz")
    assert set(loaded) == set(arrays) and np.array_equal(loaded["s"], arrays["s"]) and meta["config_hash"] == "0000"
    save_latents(tmp_path / "new.npz", loaded, meta)
    assert "s" in np.load(tmp_path / "new.npz").files and "local" not in np.load(tmp_path / "new.npz").files


def test_bad_exports_are_refused_with_the_reason(trained, tmp_path):
    export = trained[1]

    def copy(name):
        dst = tmp_path / name
        shutil.copytree(export, dst)
        return dst

    missing = copy("missing")
    (missing / "encoder.safetensors").unlink()
    with pytest.raises(ExportError, match=r"lacks \['encoder.safetensors'\]"):
        hrssm.load(missing)
    newer = copy("newer")
    cfg = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**cfg, "hrssm_format": 99}))
    with pytest.raises(ExportError, match="format 99, newer than this hrssm understands"):
        hrssm.load(newer)
    older = copy("older")  # a config.json written before encoder.pool, decoder.conv_channels, contrastive_pairs
    legacy = json.loads(json.dumps(cfg))
    for section, key in (("encoder", "pool"), ("decoder", "conv_channels"), ("loss", "contrastive_pairs")):
        del legacy[section][key]
    (older / "config.json").write_text(json.dumps(legacy))
    old_cfg = hrssm.load_world_model(older).cfg
    # what such files meant (none of these keys changes a weight's shape; a missing contrastive_input means z,
    # whose projector has another shape: test_model.py)
    assert (old_cfg.encoder.pool, old_cfg.decoder.conv_channels, old_cfg.loss.contrastive_pairs) == (
        "cls", 0, "consecutive")
    mismatch = copy("mismatch")
    cfg["encoder"]["width"] = 64
    (mismatch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match=r"shape mismatch.*encoder.*file \(.*\) vs model"):
        hrssm.load(mismatch)
    with pytest.raises(ExportError, match=r"shape mismatch"):
        hrssm.load_world_model(mismatch)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hrssm.load(tmp_path / "nope")
    with pytest.raises(ExportError, match=r"could not be fetched from the Hugging Face Hub \(offline"):
        hrssm.load("someone/hrssm-model")


def test_latents_from_another_model_and_bad_files_are_refused(trained, tmp_path):
    arrays = {k: np.zeros((2, 3), np.float32) for k in ("features", "h", "z", "s")}
    arrays.update({k: np.zeros(2, np.int64) for k in ("label", "place", "group", "img_id")})
    save_latents(tmp_path / "x.npz", arrays, {"config_hash": "0000"})
    with pytest.raises(ValueError, match="config hash 0000"):
        decode_latents(hrssm.load_world_model(trained[1]), *load_latents(tmp_path / "x.npz"))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an hrssm latents file"):
        load_latents(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="export_latents.py"):
        load_latents(tmp_path / "none.npz")


def test_push_checks_the_export_then_reaches_the_hub(trained, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    push = load_tool("push_to_hub")
    broken = tmp_path / "broken"
    broken.mkdir()
    assert push.main([str(broken), "--repo-id", "me/x"]) == 2
    assert "does not load" in capsys.readouterr().err
    calls = []
    real = HfApi.create_repo

    def spy(self, *a, **kw):
        calls.append(kw)
        return real(self, *a, **kw)  # the real call: offline here, so it fails for real

    monkeypatch.setattr(HfApi, "create_repo", spy)
    assert push.main([str(trained[1].parent), "--repo-id", "me/x", "--token", "hf_fake"]) == 1
    assert calls and calls[0]["private"] is True
    assert "could not push" in capsys.readouterr().err


def test_the_preprocessing_recorded_at_training_is_what_encode_applies(synthetic_disk, tmp_path):
    """A 0.875-crop model trained on larger, non-square images encodes a raw image exactly as training saw it."""
    from accelerate import Accelerator

    from hrssm import trainer as trainer_mod

    big = tmp_path / "big"  # the fixture's images at 44x38: resized to 37 (32 / 0.875) and center-cropped to 32
    load_waterbirds(synthetic_disk, None).map(
        lambda b: {"image": [im.resize((44, 38), Image.Resampling.BICUBIC) for im in b["image"]]}, batched=True
    ).save_to_disk(str(big))
    cfg = TrainConfig.load(None, tiny_run(big, tmp_path / "run", "--model.preprocess.crop_fraction", "0.875",
                                          "--model.preprocess.interpolation", "bicubic", "--optim.max_steps", "2",
                                          "--views.mode", "repeat"))
    train(cfg)
    enc = hrssm.load(tmp_path / "run" / "export")
    recorded = json.loads((tmp_path / "run" / "export" / "config.json").read_text())["preprocess"]
    assert recorded == {"crop_fraction": 0.875, "interpolation": "bicubic", "pixel_range": [-0.5, 0.5]}
    assert enc.cfg.preprocessing() == {"image_size": 32, "crop_fraction": 0.875, "interpolation": "bicubic"}
    collate, loader, _ = trainer_mod.make_data(cfg, cfg.model_config(), Accelerator(cpu=True))
    seen_in_training = collate([loader.dataset[i] for i in range(6)])["views"][:, 0]  # repeat mode: the image itself
    raw = load_waterbirds(big, "train")[:6]["image"]
    assert raw[0].size == (44, 38)
    assert torch.equal(preprocess(raw, **enc.cfg.preprocessing()), seen_in_training)
    assert torch.equal(enc.encode(raw), enc.encode(seen_in_training))
    assert not torch.equal(enc.encode(raw), enc.encode(preprocess(raw, 32)))  # the crop and filter change features


def test_a_two_stream_export_loads_both_streams_bit_for_bit(tmp_path):
    from hrssm.config import ModelConfig
    from hrssm.export import export

    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", image_size=32, encoder={"patch_size": 4, "input_filter": "rgb+sobel",
                                                             "pool": "mean"},
                             loss={"contrastive": "simclr", "contrastive_input": "tokens"})
    model = WorldModel(cfg).eval()
    folder = export(model, tmp_path / "export")
    x = torch.rand(4, 3, 32, 32) - 0.5  # hrssm pixels: [-0.5, 0.5]
    enc = hrssm.load(folder)
    with torch.no_grad():
        ref = model.encoder(x)[1].mean(1)  # (B, 128): [RGB stream 64, Sobel stream 64]
    assert torch.equal(enc.encode(x, features="tokens"), ref)
    loaded = WorldModel.from_pretrained(folder)
    assert loaded.cfg.encoder.input_filter == "rgb+sobel" and loaded.sobel_projector is not None
    for (k, a), (_, b) in zip(loaded.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
