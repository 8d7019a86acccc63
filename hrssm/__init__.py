"""hrssm: image representations from a hierarchical Dreamer-style world model (RSSM + ViT encoder/decoder).

    from hrssm import ModelConfig, WorldModel
    model = WorldModel(ModelConfig.preset("tiny"))        # 64x64; "base" for 224x224
    out = model(views, actions)                             # views (B, T, 3, H, W) in [-0.5, 0.5]
    out.loss.backward(); out.metrics["recon_std_ratio"]
    enc = hrssm.load("runs/demo/export"); feats = enc.encode(images)   # (B, D) features of a trained model
"""

from . import data
from .config import DecoderConfig, EncoderConfig, LossConfig, ModelConfig, RSSMConfig
from .diagnostics import CollapseReport, diagnose_collapse
from .export import Encoder, ExportError, export, load, load_world_model
from .world_model import WorldModel, WorldModelOutput

__version__ = "0.1.0"
__all__ = ["CollapseReport", "DecoderConfig", "Encoder", "EncoderConfig", "ExportError", "LossConfig", "ModelConfig",
           "RSSMConfig", "WorldModel", "WorldModelOutput", "__version__", "data", "diagnose_collapse", "export", "load",
           "load_world_model"]
