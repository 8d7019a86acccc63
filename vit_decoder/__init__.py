"""vit_decoder: a small, stand-alone ViT decoder (latent grid and/or context vector -> image), MAE style.

    from vit_decoder import ViTDecoder, ViTDecoderConfig
    dec = ViTDecoder(ViTDecoderConfig(image_size=64, patch_size=8, width=128, depth=2, heads=4,
                                      token_dim=32, latent_grid=4, context_dim=64))
    images = dec(tokens, context)   # tokens (B, 16, 32), context (B, 64) -> (B, 3, 64, 64)
"""

from .attention import attention, math_attention, xformers_usable
from .decoder import ViTDecoder, ViTDecoderConfig
from .layers import Block, patchify, sincos_pos_embed_2d, unpatchify

__all__ = ["Block", "ViTDecoder", "ViTDecoderConfig", "attention", "math_attention", "patchify",
           "sincos_pos_embed_2d", "unpatchify", "xformers_usable"]
