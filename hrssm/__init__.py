"""hrssm: image representations from a hierarchical Dreamer-style world model (RSSM + ViT encoder/decoder)."""

from . import data

__version__ = "0.1.0"
__all__ = ["data", "__version__"]
