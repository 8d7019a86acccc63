"""hrssm: image representations from a hierarchical Dreamer-style world model (RSSM + ViT encoder/decoder).

    from hrssm import ModelConfig, WorldModel
    model = WorldModel(ModelConfig.preset("tiny"))        # 64x64; "base" for 224x224
    out = model(views, actions)                             # views (B, T >= 2, 3, H, W) in [-0.5, 0.5]
    out.loss.backward(); out.metrics["recon_std_ratio"]
    enc = hrssm.load("runs/demo/export"); feats = enc.encode(images)   # (B, D) features of a trained model

Where things happen:
    world_model.py   WorldModel.forward: the loss as a sum of named terms (one KL term per level, pixels or latent
                     prediction, contrastive)
    objectives.py    every loss function; the KL balance and free nats: `balanced_kl`
    rssm.py          the recurrent core: `obs_step` (posterior) = the prior step of each level + the observation
    diagnostics.py   collapse metrics and the collapse verdict: `diagnose_collapse` (applied by trainer.CollapseWatch)
    trainer.py       `train`: setup -> loop -> export
    checkpoint.py    the checkpoint write (atomic `save_checkpoint`, a verified manifest, nothing pickled) and
                     `Checkpointer` (when, and resume)
    run_folder.py    one run per output_dir (a lock), the rules for a fresh, resumed or overwritten run folder
    errors.py, cli.py  `HrssmError` and the one mapping of errors to a line and an exit code for every script
    config.py, train_config.py, data/views.py: configs, all built, checked and described by _config_utils.py
    export.py        the export layout, strict loading, and `HubMixin` (WorldModel.save_pretrained / from_pretrained)
    hub.py, model_card.py, tracking.py: where exports come from and go to, their card, the experiment trackers
    commands/        the console scripts hrssm-train, hrssm-eval, hrssm-export-latents, hrssm-push
"""

from . import data
from .config import DecoderConfig, EncoderConfig, LossConfig, ModelConfig, RSSMConfig
from .diagnostics import CollapseReport, diagnose_collapse
from .errors import HrssmError
from .export import Encoder, ExportError, export, load, load_world_model
from .world_model import WorldModel, WorldModelOutput

__version__ = "0.1.0"
__all__ = ["CollapseReport", "DecoderConfig", "Encoder", "EncoderConfig", "ExportError", "HrssmError", "LossConfig",
           "ModelConfig", "RSSMConfig", "WorldModel", "WorldModelOutput", "__version__", "data", "diagnose_collapse",
           "export", "load", "load_world_model"]
