"""Waterbirds data: one schema from any source, a synthetic offline twin, one preprocessing, view sequences."""

from .preprocess import check_pixel_range, preprocess, resize_center_crop, to_pil, to_uint8, to_uint8_chw
from .schema import (
    COLUMNS,
    FEATURES,
    GROUP_COUNTS,
    GROUP_NAMES,
    LABEL_NAMES,
    PLACE_NAMES,
    SPLITS,
    canonical_split,
    group_of,
)
from .views import ViewCollator, ViewConfig, make_views, views_from_base
from .waterbirds import DEFAULT_HUB_ID, WaterbirdsDataError, load_waterbirds

__all__ = [
    "COLUMNS", "DEFAULT_HUB_ID", "FEATURES", "GROUP_COUNTS", "GROUP_NAMES", "LABEL_NAMES", "PLACE_NAMES", "SPLITS",
    "ViewCollator", "ViewConfig", "WaterbirdsDataError", "canonical_split", "check_pixel_range", "group_of",
    "load_waterbirds", "make_views", "preprocess", "resize_center_crop", "to_pil", "to_uint8", "to_uint8_chw",
    "views_from_base",
]
