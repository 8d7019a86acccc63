import pytest
import torch

from vit_decoder import ViTDecoder, ViTDecoderConfig, attention, math_attention, patchify, unpatchify


def test_attention_fallback_equals_the_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 17, 16, generator=g) for _ in range(3))
    ref = math_attention(q, k, v)
    torch.testing.assert_close(attention(q, k, v, "sdpa"), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention(q, k, v), ref, atol=1e-5, rtol=1e-5)  # "auto" on CPU = SDPA


def test_xformers_is_refused_clearly_on_cpu():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="xformers cannot run here"):
        attention(q, q, q, "xformers")
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, q, q, "flash")


def test_patchify_round_trip_and_layout():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    assert torch.equal(p[0, 1].reshape(4, 4, 3).permute(2, 0, 1), x[0, :, :4, 4:])  # patch 1 = top right
    assert torch.equal(unpatchify(p, 4), x)


@pytest.mark.parametrize("grid, token_dim, context_dim, conv", [(4, 8, 0, 0), (2, 8, 12, 0), (0, 0, 12, 0),
                                                                (4, 8, 12, 6)])
def test_decoder_shapes_and_gradients(grid, token_dim, context_dim, conv):
    cfg = ViTDecoderConfig(image_size=32, patch_size=8, width=32, depth=1, heads=4, token_dim=token_dim,
                           latent_grid=grid, context_dim=context_dim, conv_channels=conv)
    dec = ViTDecoder(cfg)
    tokens = torch.randn(3, grid * grid, token_dim) if grid else None
    context = torch.randn(3, context_dim) if context_dim else None
    out = dec(tokens, context)
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialized head: training starts from a flat image
    (out - 1).pow(2).sum().backward()
    last = dec.head if dec.conv_head is None else dec.conv_head[-1]
    assert last.weight.grad.abs().sum() > 0


def test_the_conv_head_sees_across_patch_borders():
    """A linear head paints each patch from its own token; the conv head's 3x3 convolutions mix the pixels on either
    side of a border, so a token moves pixels of the neighbouring patch too (what lets it smooth the seams)."""
    for conv, reaches_neighbour in ((0, False), (4, True)):
        cfg = ViTDecoderConfig(image_size=16, patch_size=4, width=16, depth=0, heads=2, token_dim=4, latent_grid=4,
                               conv_channels=conv)
        dec = ViTDecoder(cfg)
        last = dec.head if dec.conv_head is None else dec.conv_head[-1]
        torch.nn.init.normal_(last.weight)
        tokens = torch.zeros(1, 16, 4, requires_grad=True)
        dec(tokens)[0, :, 0:4, 4].sum().backward()  # the first column of pixels of patch 1 (top row, second)
        assert tokens.grad[0, 1].abs().sum() > 0
        assert (tokens.grad[0, 0].abs().sum() > 0) == reaches_neighbour  # patch 0, left of the border


def test_each_latent_cell_drives_its_own_patches():
    cfg = ViTDecoderConfig(image_size=16, patch_size=4, width=16, depth=0, heads=2, token_dim=4, latent_grid=2)
    dec = ViTDecoder(cfg)
    torch.nn.init.normal_(dec.head.weight)
    tokens = torch.zeros(1, 4, 4, requires_grad=True)
    dec(tokens)[0, :, :8, 8:].sum().backward()  # top-right quarter of the image = cell 1
    assert tokens.grad[0, 1].abs().sum() > 0
    assert tokens.grad[0, [0, 2, 3]].abs().sum() == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 30, "patch_size": 8}, "not a multiple of patch_size"),
    ({"token_dim": 8, "latent_grid": 3}, "must divide the patch grid"),
    ({"token_dim": 8}, "both be set"),
    ({}, "needs an input"),
    ({"width": 30, "context_dim": 4}, "divisible"),
    ({"context_dim": 4, "conv_channels": -1}, "conv_channels must be >= 0"),
])
def test_decoder_config_errors(kwargs, match):
    base = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 4}
    with pytest.raises(ValueError, match=match):
        ViTDecoderConfig(**{**base, **kwargs})


def test_auto_attention_falls_back_to_sdpa_when_the_xformers_trial_call_fails(monkeypatch):
    import sys

    from vit_decoder.attention import xformers_usable

    monkeypatch.setitem(sys.modules, "xformers", None)  # as if not installed (on a GPU machine too): import fails
    monkeypatch.setitem(sys.modules, "xformers.ops", None)
    xformers_usable.cache_clear()
    with pytest.warns(UserWarning, match="using torch SDPA"):
        assert not xformers_usable("cuda", torch.bfloat16)
    xformers_usable.cache_clear()
