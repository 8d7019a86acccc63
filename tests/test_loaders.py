import shutil

import numpy as np
import pytest
from PIL import Image

from hrssm.data import FEATURES, SPLITS, WaterbirdsDataError, load_waterbirds


def _summary(ds):
    return len(ds), tuple(np.bincount(ds["group"], minlength=4)), sorted(ds["img_id"])


def _hub_like(columns):
    """What a hub copy (grodino/waterbirds style) gives: image/label/place only, no img_id, plain int columns."""
    from datasets import Dataset, DatasetDict, Features, Image, Value

    feats = Features({"image": Image(), "label": Value("int64"), "place": Value("int64"), "extra": Value("string")})
    return DatasetDict({
        s: Dataset.from_dict({"image": c["image"], "label": c["label"], "place": c["place"],
                              "extra": ["x"] * len(c["label"])}, features=feats)
        for s, c in columns.items()
    })


def test_every_source_gives_one_schema_and_the_same_counts(synthetic_disk, synthetic_folder, synthetic_columns,
                                                            tmp_path, monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, **kw: calls.append(repo) or _hub_like(synthetic_columns))
    for split in SPLITS:
        disk = load_waterbirds(synthetic_disk, split)
        folder = load_waterbirds(synthetic_folder, split, cache_dir=tmp_path)
        hub = load_waterbirds("someone/waterbirds", split, cache_dir=tmp_path)
        for ds in (disk, folder, hub):
            assert ds.features == FEATURES
            assert ds.column_names == ["image", "label", "place", "group", "split", "img_id"]
            assert _summary(ds)[:2] == _summary(disk)[:2]
        assert _summary(folder) == _summary(disk)  # the folder keeps the original img_ids
        assert np.array_equal(np.asarray(folder[0]["image"]), np.asarray(disk[0]["image"]))
        assert hub[0]["image"].mode == "RGB" and set(hub["split"]) == {split}
    assert calls == ["someone/waterbirds"] * 3
    all_hub_ids = [i for s in SPLITS for i in load_waterbirds("someone/waterbirds", s, cache_dir=tmp_path)["img_id"]]
    assert len(set(all_hub_ids)) == len(all_hub_ids)  # ids made up for a source without them stay unique


def test_hub_copies_use_the_datasets_cache_unless_told_and_take_revision_and_num_proc(synthetic_columns, tmp_path,
                                                                                      monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, **kw: calls.append(kw) or _hub_like(synthetic_columns))
    load_waterbirds("someone/waterbirds", "test")  # HF_HOME / HF_DATASETS_CACHE decide where it goes
    load_waterbirds("someone/waterbirds", "test", cache_dir=tmp_path, revision="abc123", num_proc=2)
    assert calls == [{}, {"cache_dir": str(tmp_path), "revision": "abc123", "num_proc": 2}]
    with pytest.raises(ValueError, match="num_proc=0 must be a positive integer"):
        load_waterbirds("someone/waterbirds", "test", num_proc=0)


def test_split_none_and_aliases(synthetic_disk):
    dd = load_waterbirds(synthetic_disk, None)
    assert list(dd) == list(SPLITS)
    assert len(load_waterbirds(synthetic_disk, "val")) == len(dd["validation"])


def test_folder_is_converted_once_then_read_without_jpegs(synthetic_folder, tmp_path):
    folder = tmp_path / "wb"
    shutil.copytree(synthetic_folder, folder)
    first = load_waterbirds(folder, "train", cache_dir=tmp_path / "cache")
    for jpg in folder.rglob("*.jpg"):
        jpg.unlink()
    second = load_waterbirds(folder, "train", cache_dir=tmp_path / "cache")
    assert _summary(second) == _summary(first)
    assert np.array_equal(np.asarray(second[3]["image"]), np.asarray(first[3]["image"]))


def test_hub_id_offline_gives_an_actionable_error(tmp_path):
    with pytest.raises(WaterbirdsDataError, match=r"could not load 'nobody/waterbirds' from the Hugging Face Hub.*"
                                                  r"offline.*make_synthetic_waterbirds"):
        load_waterbirds("nobody/waterbirds", "train", cache_dir=tmp_path)


# -- bad input ---------------------------------------------------------------------------------------------------


def _write_folder(root, rows, images):
    """rows: (img_filename, y, split, place); images: {filename: PIL image or raw bytes}."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for k, (name, y, split, place) in enumerate(rows, start=1):
        lines.append(f"{k},{name},{y},{split},{place},/x/{k}.jpg")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    for name, im in images.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(im) if isinstance(im, bytes) else im.save(path)
    return root


def _small_folder(root, splits=(0, 1, 2), mode="RGB", size=(40, 40)):
    rows, images = [], {}
    for split in splits:
        for y in (0, 1):
            for place in (0, 1):
                name = f"b/{split}_{y}_{place}.png"
                rows.append((name, y, split, place))
                images[name] = Image.new(mode, size, 128 if mode in ("L", "P") else (10 * y, 80, 200 * place, 255)[
                    : len(mode)])
    return _write_folder(root, rows, images)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*make_synthetic_waterbirds"):
        load_waterbirds(tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_waterbirds("./data/not/here", "train")


def test_folder_that_is_neither_layout(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(WaterbirdsDataError, match="neither a save_to_disk directory.*nor an original"):
        load_waterbirds(tmp_path / "x", "train", cache_dir=tmp_path)


def test_missing_or_renamed_metadata_column(tmp_path):
    root = _small_folder(tmp_path / "wb")
    text = (root / "metadata.csv").read_text().replace(",place,", ",background,", 1)
    (root / "metadata.csv").write_text(text)
    with pytest.raises(WaterbirdsDataError, match=r"lacks column\(s\) \['place'\].*rename your columns"):
        load_waterbirds(root, "train", cache_dir=tmp_path / "c")


def test_renamed_column_in_a_saved_dataset(tmp_path):
    from datasets import Dataset, DatasetDict

    im = Image.new("RGB", (8, 8))
    DatasetDict({"train": Dataset.from_dict({"image": [im], "bird": [1], "place": [0]})}).save_to_disk(tmp_path / "d")
    with pytest.raises(WaterbirdsDataError, match=r"lacks column\(s\) \['label'\]"):
        load_waterbirds(tmp_path / "d", "train")


def test_bad_label_values(tmp_path):
    root = _small_folder(tmp_path / "wb")
    (root / "metadata.csv").write_text((root / "metadata.csv").read_text().replace("b/0_1_0.png,1,", "b/0_1_0.png,3,"))
    with pytest.raises(WaterbirdsDataError, match=r"column 'y' must hold \[0, 1\], found \[3\]"):
        load_waterbirds(root, "train", cache_dir=tmp_path / "c")


def test_unknown_split(synthetic_disk):
    with pytest.raises(ValueError, match="unknown split 'tarin'.*'train', 'validation'"):
        load_waterbirds(synthetic_disk, "tarin")


def test_missing_image_file_is_named(tmp_path):
    root = _small_folder(tmp_path / "wb")
    (root / "b" / "1_0_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) listed in .*missing, e\.g\. .*b/1_0_1\.png"):
        load_waterbirds(root, "train", cache_dir=tmp_path / "c")


def test_unreadable_image_file_is_named(tmp_path):
    root = _small_folder(tmp_path / "wb")
    (root / "b" / "2_1_1.png").write_bytes(b"not an image at all")
    with pytest.raises(WaterbirdsDataError, match=r"cannot be decoded: .*b/2_1_1\.png"):
        load_waterbirds(root, "train", cache_dir=tmp_path / "c")
    jpg = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    import io

    buf = io.BytesIO()
    Image.fromarray(jpg).save(buf, format="JPEG")
    (root / "b" / "2_1_1.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated JPEG
    with pytest.raises(WaterbirdsDataError, match=r"b/2_1_1\.png \(OSError"):
        load_waterbirds(root, "train", cache_dir=tmp_path / "c")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_palette_images_become_rgb(tmp_path, mode):
    root = _small_folder(tmp_path / "wb", mode=mode)
    ds = load_waterbirds(root, "train", cache_dir=tmp_path / "c")
    for row in ds:
        assert row["image"].mode == "RGB"
    resized = load_waterbirds(root, "train", image_size=16, cache_dir=tmp_path / "c")
    assert np.asarray(resized[0]["image"]).shape == (16, 16, 3)


def test_wrong_sizes_are_resized_and_center_cropped(tmp_path):
    # A wide image with red | green | blue thirds: the center crop keeps only green.
    wide = np.zeros((30, 90, 3), np.uint8)
    wide[:, :30, 0] = wide[:, 30:60, 1] = wide[:, 60:, 2] = 255
    tall = np.full((70, 20, 3), 77, np.uint8)
    root = _write_folder(tmp_path / "wb", [("a.png", 0, 0, 0), ("b.png", 1, 0, 1)],
                         {"a.png": Image.fromarray(wide), "b.png": Image.fromarray(tall)})
    ds = load_waterbirds(root, "train", image_size=24, cache_dir=tmp_path / "c")
    a, b = np.asarray(ds[0]["image"]), np.asarray(ds[1]["image"])
    assert a.shape == b.shape == (24, 24, 3)
    assert a[:, 2:-2, 1].min() == 255 and a[:, 2:-2, 0].max() == 0 and a[:, 2:-2, 2].max() == 0
    assert (b == 77).all()
    again = load_waterbirds(root, "train", image_size=24, cache_dir=tmp_path / "c")
    assert np.array_equal(np.asarray(again[0]["image"]), a)


def test_empty_split(tmp_path):
    root = _small_folder(tmp_path / "wb", splits=(0, 1))
    with pytest.raises(WaterbirdsDataError, match="split 'test' of .* is empty"):
        load_waterbirds(root, "test", cache_dir=tmp_path / "c")
    assert list(load_waterbirds(root, None, cache_dir=tmp_path / "c")) == ["train", "validation"]


def test_bad_image_size(synthetic_disk):
    with pytest.raises(ValueError, match="image_size=0 must be a positive integer"):
        load_waterbirds(synthetic_disk, "train", image_size=0)
