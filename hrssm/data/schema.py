"""The one Waterbirds schema every loader returns, and the facts of the benchmark's group structure."""

from __future__ import annotations

from typing import TypeVar

from datasets import ClassLabel, Features, Image, Value

T = TypeVar("T")

LABEL_NAMES = ("landbird", "waterbird")
PLACE_NAMES = ("land", "water")
SPLITS = ("train", "validation", "test")
# Names users and the original metadata.csv use for the same splits.
SPLIT_ALIASES = {
    "train": "train", "val": "validation", "valid": "validation", "validation": "validation", "test": "test",
}
ORIGINAL_SPLIT_CODES = {0: "train", 1: "validation", 2: "test"}  # metadata.csv `split` column

#: Columns of every dataset `load_waterbirds` returns, in this order.
COLUMNS = ("image", "label", "place", "group", "split", "img_id")

FEATURES = Features(
    {
        "image": Image(mode="RGB"),  # decoded as RGB whatever the file holds (grayscale, RGBA, palette)
        "label": ClassLabel(names=list(LABEL_NAMES)),
        "place": ClassLabel(names=list(PLACE_NAMES)),
        "group": Value("int64"),  # group_of(label, place)
        "split": Value("string"),  # one of SPLITS
        "img_id": Value("int64"),
    }
)

#: Group names indexed by group id (`group_of`); loop over groups with `enumerate(GROUP_NAMES)`.
GROUP_NAMES = ("landbird_land", "landbird_water", "waterbird_land", "waterbird_water")

#: Images per group in the real Waterbirds (Sagawa et al. 2020), indexed by group id.
GROUP_COUNTS = {
    "train": (3498, 184, 56, 1057),
    "validation": (467, 466, 133, 133),
    "test": (2255, 2255, 642, 642),
}


def group_of(label: T, place: T) -> T:
    """Group id of a (bird class, background) pair, 2 * label + place (an index of GROUP_NAMES); works elementwise
    on NumPy arrays and tensors too."""
    return 2 * label + place


def canonical_split(split: str | int) -> str:
    """Map a split name, alias or original code (0/1/2) to one of :data:`SPLITS`, or raise a clear error."""
    if isinstance(split, int) and split in ORIGINAL_SPLIT_CODES:
        return ORIGINAL_SPLIT_CODES[split]
    key = str(split).strip().lower()
    if key in SPLIT_ALIASES:
        return SPLIT_ALIASES[key]
    raise ValueError(
        f"unknown split {split!r}: use one of 'train', 'validation' (alias 'val'), 'test' "
        "(or the original metadata.csv codes 0, 1, 2)"
    )


def scaled_group_counts(split: str, scale: float) -> tuple[int, int, int, int]:
    """Group counts of `split` multiplied by `scale`, rounded, and at least 1 so every group exists."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return tuple(max(1, round(n * scale)) for n in GROUP_COUNTS[canonical_split(split)])  # type: ignore[return-value]
