import io

import numpy as np
import pytest
from PIL import Image

from hrssm.data import GROUP_COUNTS, SPLITS, load_waterbirds, synthetic
from hrssm.data.schema import scaled_group_counts


def test_real_group_table_is_the_published_one():
    assert {s: sum(c) for s, c in GROUP_COUNTS.items()} == {"train": 4795, "validation": 1199, "test": 5794}
    assert scaled_group_counts("train", 1.0) == (3498, 184, 56, 1057)
    assert scaled_group_counts("val", 0.5) == (234, 233, 66, 66)  # alias + rounding
    assert scaled_group_counts("train", 0.001) == (3, 1, 1, 1)  # every group keeps at least one image
    with pytest.raises(ValueError, match="scale must be > 0"):
        scaled_group_counts("train", 0)


def test_group_counts_match_scaled_table(synthetic_disk):
    for split in SPLITS:
        ds = load_waterbirds(synthetic_disk, split)
        counts = tuple(np.bincount(ds["group"], minlength=4))
        assert counts == scaled_group_counts(split, 0.02), split
        assert set(ds["split"]) == {split}
        assert all(g == 2 * y + p for g, y, p in zip(ds["group"], ds["label"], ds["place"]))


def test_same_seed_same_bytes_other_seed_other_bytes(synthetic_columns):
    again = synthetic.generate(image_size=32, scale=0.02, seed=0, workers=2, progress=False)  # other worker count
    for split in SPLITS:
        want = [im["bytes"] for im in synthetic_columns[split]["image"]]
        assert [im["bytes"] for im in again[split]["image"]] == want
        assert again[split]["img_id"] == synthetic_columns[split]["img_id"]
    other = synthetic.generate(image_size=32, scale=0.02, seed=1, workers=1, progress=False)
    same = sum(a["bytes"] == b["bytes"] for a, b in zip(other["train"]["image"], synthetic_columns["train"]["image"]))
    assert same == 0


def test_img_ids_unique_and_images_decode_at_size(synthetic_columns):
    ids = [i for s in SPLITS for i in synthetic_columns[s]["img_id"]]
    assert len(ids) == len(set(ids))
    im = Image.open(io.BytesIO(synthetic_columns["test"]["image"][0]["bytes"]))
    assert im.size == (32, 32) and im.mode == "RGB"


def test_background_is_a_shortcut_but_not_the_label():
    """Mean colour (a background-only feature) predicts the place, not the bird, on the balanced test split."""
    cols = synthetic.generate(image_size=32, scale=0.06, seed=3, workers=1, progress=False)

    def features(split):
        x = np.stack([np.asarray(Image.open(io.BytesIO(im["bytes"]))).reshape(-1, 3).mean(0)
                      for im in cols[split]["image"]])
        return x, np.asarray(cols[split]["label"]), np.asarray(cols[split]["place"])

    def nearest_mean_accuracy(x_tr, y_tr, x_te, y_te):
        means = np.stack([x_tr[y_tr == k].mean(0) for k in (0, 1)])
        pred = np.argmin(((x_te[:, None] - means[None]) ** 2).sum(-1), axis=1)
        return (pred == y_te).mean()

    x_tr, y_tr, p_tr = features("train")
    x_te, y_te, p_te = features("test")
    assert nearest_mean_accuracy(x_tr, p_tr, x_te, p_te) > 0.9  # the background is easy
    assert nearest_mean_accuracy(x_tr, y_tr, x_te, y_te) < 0.7  # the bird is not readable from it


def test_counterfactual_pair_keeps_the_bird():
    bird_rng, _ = synthetic.example_rngs(0, "train", 5)
    bird = synthetic.sample_bird(bird_rng, label=1)
    land, _ = synthetic.sample_background(np.random.default_rng(1), 0, 64)
    water, _ = synthetic.sample_background(np.random.default_rng(1), 1, 64)
    a, b = synthetic.render(bird, land), synthetic.render(bird, water)
    black, white = np.zeros_like(land), np.full_like(land, 255)
    opaque = np.all(synthetic.render(bird, black) == synthetic.render(bird, white), axis=-1)
    assert opaque.sum() > 30  # the bird covers some pixels fully
    assert np.array_equal(a[opaque], b[opaque])  # ... which are identical in both images
    assert (np.abs(a.astype(int) - b.astype(int)).sum(-1)[~opaque] > 0).mean() > 0.8  # the background is not


def test_generator_rejects_tiny_images():
    with pytest.raises(ValueError, match="at least 16"):
        synthetic.generate(image_size=8, scale=0.01, workers=1, progress=False)


def test_cli_writes_both_layouts_and_contact_sheet(tmp_path, capsys):
    from recipes_loader import load_tool

    tool = load_tool("make_synthetic_waterbirds")
    args = ["--out", str(tmp_path / "d"), "--folder", str(tmp_path / "f"), "--image-size", "24", "--scale", "0.005",
            "--contact-sheet", str(tmp_path / "sheet.png"), "--workers", "1", "--quiet"]
    assert tool.main(args) == 0
    assert (tmp_path / "f" / "metadata.csv").read_text().startswith("img_id,img_filename,y,split,place,place_filename")
    assert Image.open(tmp_path / "sheet.png").size[1] == 4 * 96
    assert tool.main(args) == 2  # refuses to overwrite silently
    assert "--overwrite" in capsys.readouterr().err


def test_own_palette_says_which_class_colours_each_bird_was_drawn_from():
    def nearest_is_own(body, label):
        own, other = ((synthetic._LANDBIRD_COLOURS, synthetic._WATERBIRD_COLOURS) if label == 0
                      else (synthetic._WATERBIRD_COLOURS, synthetic._LANDBIRD_COLOURS))
        dist = lambda palette: min(np.abs(np.subtract(body, c)).max() for c in palette)  # noqa: E731
        return dist(own) < dist(other)

    own = synthetic.own_palette("test", 60, seed=0)
    assert 0.6 < own.mean() < 0.9 and own.dtype == bool  # ~75% of birds take their own class's colours
    for k in range(60):
        for label in (0, 1):  # the palette draw comes first, whatever the class
            spec = synthetic.sample_bird(synthetic.example_rngs(0, "test", k)[0], label)
            assert nearest_is_own(spec.body, label) == own[k], (k, label)
    assert not np.array_equal(synthetic.own_palette("test", 60, seed=1), own)
