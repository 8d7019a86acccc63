"""Load Waterbirds (real or synthetic) from any of its three homes into one `datasets` schema.

``source`` may be
  * a Hugging Face Hub dataset id (e.g. ``grodino/waterbirds``: parquet, splits train/validation/test),
  * a directory written by ``save_to_disk`` (a DatasetDict, or a Dataset with a ``split`` column),
  * the original Waterbirds folder: ``metadata.csv`` (``img_id, img_filename, y, split, place, place_filename``)
    plus the image files. It is converted once into an Arrow cache (``cache_dir``, default ``$HRSSM_CACHE``) and
    reloaded from there, so the JPEGs are not read again.

Hub downloads go where `datasets` puts them (``HF_HOME`` / ``HF_DATASETS_CACHE``) unless ``cache_dir`` is given, so
a copy you already downloaded is reused.

Every path returns the columns of :data:`hrssm.data.schema.FEATURES`: ``image`` (decoded as RGB), ``label``,
``place``, ``group`` (`hrssm.data.schema.group_of`), ``split``, ``img_id``.

Hostile or broken input is refused with a `WaterbirdsDataError` naming the file, column or row: an
``img_filename`` that is absolute or leads out of the folder (``../``), a metadata.csv that is not CSV, an
``image`` column that holds no images (e.g. file names as strings), a `cache_dir` that is a file. 16-bit images
are scaled to 8 bits (`hrssm.data.preprocess.to_rgb8`), not clipped to white.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path, PurePath

import numpy as np
from PIL import Image as PILImage

from .._config_utils import integer
from .._io import atomic_directory, is_hub_id
from ..errors import HrssmError, one_line
from .preprocess import is_high_bit_depth, resize_center_crop, to_rgb8, to_uint8_chw
from .schema import FEATURES, ORIGINAL_SPLIT_CODES, SPLITS, canonical_split, group_of

DEFAULT_HUB_ID = "grodino/waterbirds"
METADATA_COLUMNS = ("img_id", "img_filename", "y", "split", "place")
_CACHE_FORMAT = 1  # bump when the converted layout changes


class WaterbirdsDataError(HrssmError, ValueError):
    """A Waterbirds source that cannot be used as it is; the message says what to fix."""


def default_cache_dir() -> Path:
    """Where original folders are converted to Arrow: ``$HRSSM_CACHE`` or ``~/.cache/hrssm``."""
    return Path(os.environ.get("HRSSM_CACHE", Path.home() / ".cache" / "hrssm"))


def load_waterbirds(source: str | os.PathLike = DEFAULT_HUB_ID, split: str | None = "train",
                    image_size: int | None = None, crop_fraction: float = 1.0,
                    cache_dir: str | os.PathLike | None = None, *, interpolation: str = "bilinear",
                    revision: str | None = None, num_proc: int | None = None):
    """Waterbirds as a `datasets.Dataset` (one split) or `DatasetDict` (``split=None``: every non-empty split).

    Args:
        source: hub dataset id, `save_to_disk` directory, or original Waterbirds folder (see module docstring).
        split: ``train``, ``validation`` (alias ``val``), ``test``, or None for all.
        image_size: if given, every image is resized (shorter side) and center-cropped to this square size with
            :func:`hrssm.data.preprocess.resize_center_crop`, the same function training uses. The result is cached
            by `datasets`, so the second call is fast.
        crop_fraction: the resize target is ``image_size / crop_fraction`` before the crop (0.875 = resize 256,
            crop 224, the usual Waterbirds eval transform).
        cache_dir: where converted folders and hub downloads are cached; default: ``$HRSSM_CACHE`` (or
            ``~/.cache/hrssm``) for converted folders, the `datasets` cache (``HF_HOME`` / ``HF_DATASETS_CACHE``)
            for hub downloads.
        interpolation: the resize filter, ``bilinear`` or ``bicubic`` (antialiased). A model's settings:
            ``load_waterbirds(source, split, **model.cfg.preprocessing())``.
        revision: a hub dataset's branch, tag or commit (pin it for reproducible results).
        num_proc: processes for the hub download / preparation and the resize map (default: one).
    """
    from datasets import DatasetDict

    try:
        wanted = None if split is None else canonical_split(split)
    except ValueError as err:
        raise WaterbirdsDataError(str(err)) from None
    if image_size is not None:
        integer("image_size", image_size)
    if num_proc is not None:
        integer("num_proc", num_proc)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    if (cache or default_cache_dir()).is_file():
        raise WaterbirdsDataError(f"the cache folder {cache or default_cache_dir()} (data.cache_dir, or $HRSSM_CACHE) "
                                  f"is a file: give a folder, or leave it unset for the defaults")
    splits, where = _open_source(source, cache, revision, num_proc)

    def finish(name: str):
        ds = splits.get(name)
        if ds is None or len(ds) == 0:
            raise WaterbirdsDataError(
                f"split {name!r} of {where} is empty (0 images; non-empty splits: "
                f"{[s for s in splits if len(splits[s])] or 'none'}): check the `split` column of its metadata "
                "(0 train, 1 validation, 2 test) or pick another split"
            )
        ds = _standardize(ds, name, where, id_offset=_id_offset(splits, name))
        return _resize(ds, image_size, crop_fraction, interpolation, num_proc) if image_size is not None else ds

    if wanted is not None:
        return finish(wanted)
    names = [s for s in SPLITS if s in splits and len(splits[s]) > 0]
    if not names:
        raise WaterbirdsDataError(f"{where} holds no images in any split")
    return DatasetDict({s: finish(s) for s in names})


# -- where the data comes from ------------------------------------------------------------------------------------


def _open_source(source, cache: Path | None, revision: str | None, num_proc: int | None):
    """{split: Dataset} of the source and a human-readable description of it (`cache`: the user's cache_dir)."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise WaterbirdsDataError(
                f"{path} is a file; give the Waterbirds folder (holding metadata.csv) or a save_to_disk directory"
            )
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _from_disk(path), f"save_to_disk directory {path}"
        if (path / "metadata.csv").exists():
            return _from_disk(_convert_folder(path, cache or default_cache_dir())), f"Waterbirds folder {path}"
        raise WaterbirdsDataError(
            f"{path} is neither a save_to_disk directory (no dataset_dict.json / state.json) nor an original "
            "Waterbirds folder (no metadata.csv). Point to one of those, or make a synthetic copy with "
            "`python tools/make_synthetic_waterbirds.py --out DIR`."
        )
    if not is_hub_id(source):
        raise FileNotFoundError(
            f"Waterbirds folder {path} does not exist. Check the path, or make a synthetic copy with "
            f"`python tools/make_synthetic_waterbirds.py --out {text}`."
        )
    where = f"hub dataset {text!r}" + (f" at revision {revision!r}" if revision else "")
    return _from_hub(text, cache, revision, num_proc), where


def _from_disk(path: Path) -> dict:
    from datasets import Dataset, DatasetDict, load_from_disk

    obj = load_from_disk(str(path))
    if isinstance(obj, DatasetDict):
        return {_split_key(k): v for k, v in obj.items()}
    assert isinstance(obj, Dataset)
    if "split" not in obj.column_names:
        raise WaterbirdsDataError(
            f"{path} holds a single Dataset without a `split` column: save a DatasetDict with train/validation/test "
            "splits, or add a `split` column"
        )
    names = obj.unique("split")
    return {
        canonical_split(n): obj.filter(lambda s, n=n: [v == n for v in s], input_columns="split", batched=True)
        for n in names
    }


def _split_key(name: str) -> str:
    try:
        return canonical_split(name)
    except ValueError:
        return name  # an extra split (kept, but only reachable by the canonical names)


def _from_hub(repo_id: str, cache: Path | None, revision: str | None, num_proc: int | None) -> dict:
    """The hub dataset's splits; `datasets` picks the cache (HF_HOME / HF_DATASETS_CACHE) unless `cache` is given."""
    import datasets

    options = {"revision": revision, "num_proc": num_proc, "cache_dir": None if cache is None else str(cache)}
    try:
        dd = datasets.load_dataset(repo_id, **{k: v for k, v in options.items() if v is not None})
    except Exception as err:  # network, missing repo, auth: all end the same way for the user
        raise WaterbirdsDataError(
            f"could not load {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}). It is not a local "
            "folder either. If you are offline, point `source` to a local copy (a save_to_disk directory or the "
            "original folder with metadata.csv), or make a synthetic one with "
            "`python tools/make_synthetic_waterbirds.py --out DIR`."
        ) from err
    return {_split_key(k): v for k, v in dd.items()}


def _id_offset(splits: dict, name: str) -> int:
    """Offset giving unique img_ids across splits to sources that have none."""
    offset = 0
    for s in SPLITS:
        if s == name:
            return offset
        offset += len(splits.get(s, ()))
    return offset


# -- the original folder ----------------------------------------------------------------------------------------


def _read_metadata(meta_path: Path, meta_bytes: bytes):
    """The metadata.csv as a pandas DataFrame, its columns, values and paths checked (a clear error otherwise)."""
    import pandas as pd

    try:
        meta = pd.read_csv(io.BytesIO(meta_bytes))
    except ValueError as err:  # ParserError, EmptyDataError, UnicodeDecodeError
        raise WaterbirdsDataError(f"{meta_path} cannot be read as CSV ({type(err).__name__}: {one_line(err)[:200]}): "
                                  f"it must be the original Waterbirds metadata.csv ({', '.join(METADATA_COLUMNS)}, "
                                  "place_filename)") from None
    meta.columns = [str(c).strip() for c in meta.columns]
    missing = [c for c in METADATA_COLUMNS if c not in meta.columns]
    if missing:
        raise WaterbirdsDataError(
            f"{meta_path} lacks column(s) {missing}; found {list(meta.columns)}. The original Waterbirds "
            f"metadata.csv has {', '.join(METADATA_COLUMNS)}, place_filename (rename your columns to these)."
        )
    for col, allowed in (("y", {0, 1}), ("place", {0, 1}), ("split", set(ORIGINAL_SPLIT_CODES))):
        bad = sorted(set(meta[col].unique().tolist()) - allowed, key=str)
        if bad:
            raise WaterbirdsDataError(f"{meta_path}: column {col!r} must hold {sorted(allowed)}, found {bad[:5]}")
    if not pd.api.types.is_integer_dtype(meta["img_id"]):
        raise WaterbirdsDataError(f"{meta_path}: column 'img_id' must hold integers, found "
                                  f"{meta['img_id'].head(3).tolist()}")
    _check_inside(meta, meta_path)
    return meta


def _read_images(root: Path, meta, meta_path: Path) -> list[dict]:
    """The image files of every row as checked bytes (a clear error naming missing or undecodable files)."""
    from tqdm.auto import tqdm

    images, missing_files, unreadable = [], [], []
    for name in tqdm(meta["img_filename"], desc=f"reading {root.name}", unit="img", mininterval=2):
        path = root / str(name)
        if not path.is_file():
            missing_files.append(path)
            images.append(None)
            continue
        data = path.read_bytes()
        try:
            data = _checked_image(data)
        except Exception as err:
            unreadable.append(f"{path} ({type(err).__name__}: {err})")
        images.append({"bytes": data, "path": None})
    if missing_files:
        raise FileNotFoundError(
            f"{len(missing_files)} image file(s) listed in {meta_path} are missing, e.g. {missing_files[0]}"
            + (f" and {missing_files[1]}" if len(missing_files) > 1 else "")
            + ". Unpack the complete archive into that folder, or remove those rows from metadata.csv."
        )
    if unreadable:
        raise WaterbirdsDataError(
            f"{len(unreadable)} image file(s) in {root} cannot be decoded: {'; '.join(unreadable[:3])}. "
            "Replace them (re-download or re-extract) or remove their rows from metadata.csv."
        )
    return images


def _convert_folder(root: Path, cache: Path) -> Path:
    """Convert an original Waterbirds folder into a save_to_disk cache (once) and return the cache path."""
    meta_path = root / "metadata.csv"
    meta_bytes = meta_path.read_bytes()
    key = hashlib.sha1(meta_bytes + str(root.resolve()).encode() + f"v{_CACHE_FORMAT}".encode()).hexdigest()[:16]
    out = cache / "waterbirds" / f"{root.resolve().name}-{key}"
    if (out / "dataset_dict.json").exists():
        return out

    from datasets import Dataset, DatasetDict

    meta = _read_metadata(meta_path, meta_bytes)
    images = _read_images(root, meta, meta_path)

    labels, places = meta["y"].to_numpy(), meta["place"].to_numpy()
    codes, ids = meta["split"].to_numpy(), meta["img_id"].to_numpy()
    dd = DatasetDict()
    for code, name in ORIGINAL_SPLIT_CODES.items():
        idx = np.flatnonzero(codes == code)
        if len(idx) == 0:
            continue  # (datasets cannot reload a saved 0-row split) an absent split reads as empty below
        dd[name] = Dataset.from_dict(
            {
                "image": [images[i] for i in idx],
                "label": labels[idx].tolist(),
                "place": places[idx].tolist(),
                "group": group_of(labels[idx], places[idx]).tolist(),
                "split": [name] * len(idx),
                "img_id": ids[idx].tolist(),
            },
            features=FEATURES,
        )
    with atomic_directory(out) as work:  # an interrupted conversion never leaves a half cache behind
        dd.save_to_disk(str(work))
    return out


def _check_inside(meta, meta_path: Path) -> None:
    """Refuse `img_filename`s that are absolute or lead out of the dataset folder (``../``), naming the rows."""
    bad = []
    for row, name in enumerate(meta["img_filename"].astype(str)):
        parts = PurePath(os.path.normpath(name)).parts
        if PurePath(name).is_absolute() or name.startswith("~") or (parts and parts[0] == ".."):
            bad.append(f"row {row + 2} ({name!r})")  # row 1 is the header
    if bad:
        raise WaterbirdsDataError(
            f"{meta_path}: img_filename must be a path inside {meta_path.parent}, relative to it, but "
            f"{len(bad)} row(s) point elsewhere: {', '.join(bad[:3])}. Move those images into the folder and "
            "list them relative to it, or remove the rows")


def _checked_image(data: bytes) -> bytes:
    """Decode an image fully (JPEGs at 1/8 scale, which still reads every byte) to catch truncated files; a
    high-bit-depth image comes back as an 8-bit PNG (datasets' RGB decoding would clip it to white)."""
    with PILImage.open(io.BytesIO(data)) as im:
        if is_high_bit_depth(im.mode):
            buf = io.BytesIO()
            to_rgb8(im).save(buf, format="PNG")
            return buf.getvalue()
        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
    return data


# -- one schema -------------------------------------------------------------------------------------------------


def _standardize(ds, split: str, where: str, id_offset: int = 0):
    """Rename/derive/cast columns to :data:`FEATURES` (plus an optional `counterfactual` image, kept for edit
    sequences); clear errors for what cannot be fixed."""
    features = _features_of(ds)
    if ds.features == features:
        return ds
    cols = set(ds.column_names)
    if "label" not in cols and "y" in cols:
        ds = ds.rename_column("y", "label")
        cols = set(ds.column_names)
    missing = [c for c in ("image", "label", "place") if c not in cols]
    if missing:
        raise WaterbirdsDataError(
            f"split {split!r} of {where} lacks column(s) {missing}; found {sorted(cols)}. Waterbirds needs `image`, "
            "`label` (or `y`; 0 landbird, 1 waterbird) and `place` (0 land, 1 water): rename the columns holding them."
        )
    from datasets import Image as ImageFeature

    if not isinstance(ds.features["image"], ImageFeature):
        raise WaterbirdsDataError(
            f"column 'image' of split {split!r} of {where} holds {ds.features['image']}, not images (e.g. "
            f"{str(ds[0]['image'])[:60]!r}): store the images themselves, cast with datasets.Image()")
    labels, places = np.asarray(ds["label"]), np.asarray(ds["place"])
    for name, values in (("label", labels), ("place", places)):
        bad = sorted(set(np.unique(values).tolist()) - {0, 1})
        if bad:
            raise WaterbirdsDataError(f"column {name!r} of split {split!r} of {where} must be 0/1, found {bad[:5]}")
    if "img_id" not in cols:
        ds = ds.add_column("img_id", list(range(id_offset, id_offset + len(ds))))
    for name, values in (("group", group_of(labels, places).tolist()), ("split", [split] * len(ds))):
        if name in cols:  # always derived, so it cannot disagree with label/place or the split it came from
            ds = ds.remove_columns(name)
        ds = ds.add_column(name, values)
    return ds.select_columns(list(features)).cast(features)


def _features_of(ds):
    """FEATURES, plus the `counterfactual` image column when the dataset has one (hrssm.data.counterfactual)."""
    from datasets import Features
    from datasets import Image as ImageFeature

    if "counterfactual" not in ds.column_names:
        return FEATURES
    return Features({**FEATURES, "counterfactual": ImageFeature(mode="RGB")})


def _resize_batch(batch: dict, image_size: int, crop_fraction: float, interpolation: str) -> dict:
    """Encoded images ({"bytes", "path"}) -> 8-bit RGB image_size squares (unchanged when they already are)."""
    out = {}
    for key in [k for k in ("image", "counterfactual") if k in batch]:
        out[key] = []
        for item in batch[key]:
            with _open(item) as im:
                if im.size != (image_size, image_size) or is_high_bit_depth(im.mode):
                    chw = resize_center_crop(to_uint8_chw(im), image_size, crop_fraction, interpolation)
                    item = PILImage.fromarray(chw.permute(1, 2, 0).numpy())
            out[key].append(item)
    return out


def _resize(ds, image_size: int, crop_fraction: float, interpolation: str, num_proc: int | None):
    """Resize + center-crop every image (skipped when all already are 8-bit image_size squares). It works on the
    encoded files, so 16-bit images are scaled to 8 bits (datasets' RGB decoding would clip them to white)."""
    from datasets import Image

    if all(size == (image_size, image_size) and not is_high_bit_depth(mode) for size, mode in _image_headers(ds)):
        return ds
    raw = ds
    for key in [k for k in ("image", "counterfactual") if k in ds.column_names]:
        raw = raw.cast_column(key, Image(decode=False))
    return raw.map(_resize_batch, batched=True, batch_size=64, features=_features_of(ds), num_proc=num_proc,
                   fn_kwargs={"image_size": image_size, "crop_fraction": crop_fraction, "interpolation": interpolation},
                   desc=f"resizing to {image_size}x{image_size}")


def _image_headers(ds):
    """(size, mode) of every image, from the file headers only."""
    from datasets import Image

    raw = ds.cast_column("image", Image(decode=False))
    for batch in raw.iter(batch_size=512):
        for item in batch["image"]:
            with _open(item) as im:
                yield im.size, im.mode


def _open(item: dict) -> PILImage.Image:
    """An encoded image of a `datasets` Image column ({"bytes", "path"}), opened lazily."""
    return PILImage.open(io.BytesIO(item["bytes"])) if item["bytes"] is not None else PILImage.open(item["path"])
