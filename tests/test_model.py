import warnings

import pytest
import torch
from conftest import plain_tiny

from hrssm.config import ModelConfig, parse_overrides
from hrssm.world_model import WorldModel


def _inputs(cfg, b=2, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = torch.rand(b, t, 3, cfg.image_size, cfg.image_size, generator=g) - 0.5
    return views, torch.zeros(b, t, cfg.action_dim)


def _tiny(size=32, **over):
    """The plain tiny model (one RGB stream, no contrastive term) at `size`: each test varies the keys it is about."""
    return plain_tiny(image_size=size, **over)


@pytest.mark.parametrize("preset, size, steps", [("tiny", 32, 1), ("tiny", 32, 3), ("tiny", 64, 1), ("tiny", 64, 2),
                                                 ("base", 224, 1), ("base", 224, 2)])
def test_output_shapes(preset, size, steps):
    cfg = ModelConfig.preset(preset, image_size=size)
    model = WorldModel(cfg)
    views, actions = _inputs(cfg, b=2, t=steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(views, actions)
    r = cfg.rssm
    assert out.recon.shape == views.shape
    assert out.trajectory.h.shape == (2, steps, r.deter)
    assert out.trajectory.z.shape == (2, steps, r.stoch * r.classes)
    assert out.trajectory.s.shape == (2, steps, r.local_grid**2, r.local_dim)
    assert model.features(out.trajectory).shape == (2, steps, model.rssm.feature_dim)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    for t in range(steps):
        assert f"kl_global/t{t}" in out.metrics and f"kl_local/t{t}" in out.metrics


@pytest.mark.parametrize("over", [
    {},
    {"loss": {"contrastive": "barlow", "contrastive_input": "z"}},
    {"loss": {"contrastive": "simclr", "recon_type": "normalized_patch"}},
    {"loss": {"contrastive": "simclr", "contrastive_input": "z"}},
    {"loss": {"contrastive": "simclr", "contrastive_input": "tokens", "contrastive_pairs": "all"},
     "encoder": {"pool": "mean"}},
    {"loss": {"contrastive": "barlow", "contrastive_pairs": "all"}},
    {"loss": {"objective": "latent_prediction"}},
    {"rssm": {"local_grid": 0}},
    {"encoder": {"stem": "patch"}},
    {"encoder": {"stem": "conv"}},
    {"decoder": {"conv_channels": 8}},
    {"loss": {"contrastive": "simclr", "contrastive_input": "tokens"},
     "encoder": {"input_filter": "rgb+sobel", "pool": "mean", "stem": "conv"}},
    {"loss": {"objective": "latent_prediction"}, "encoder": {"input_filter": "rgb+sobel"}},
])
def test_every_parameter_gets_a_finite_gradient(over):
    model = WorldModel(_tiny(**over))
    out = model(*_inputs(model.cfg, b=4, t=3))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad
    for name in ("rssm.gru.weight_hh", "rssm.transition_in.0.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    stems = [m for m in model.encoder.modules() if hasattr(m, "patch_embed")]  # one per stream
    assert len(stems) == model.encoder.streams
    assert all(next(m.patch_embed.parameters()).grad.abs().sum() > 0 for m in stems)  # the stems' first layers


def test_single_step_warns_and_the_transition_gets_no_gradient():
    model = WorldModel(_tiny())
    with pytest.warns(UserWarning, match="transition model .* gets no training signal"):
        out = model(*_inputs(model.cfg, t=1))
    out.loss.backward()
    assert model.rssm.gru.weight_hh.grad is None and model.rssm.transition_in[0].weight.grad is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per model, not every step
        model(*_inputs(model.cfg, t=1))


def test_imagine_rolls_out_the_prior_and_decodes():
    model = WorldModel(_tiny()).eval()
    views, actions = _inputs(model.cfg, b=2, t=2)
    with torch.no_grad():
        traj = model.observe(views, actions)
        dream = model.imagine(traj.state(-1), torch.zeros(2, 5, 1))
        images = model.decode(dream.h, dream.z, dream.s)
    assert dream.h.shape[:2] == (2, 5) and dream.post_global is None and dream.prior_local.shape[:3] == (2, 5, 16)
    assert images.shape == (2, 5, 3, 32, 32) and torch.isfinite(images).all()


def test_everything_the_decoder_sees_comes_from_the_latents():
    model = WorldModel(_tiny()).eval()
    views, actions = _inputs(model.cfg)
    with torch.no_grad():
        out = model(views, actions)
        again = model.decode(out.trajectory.h, out.trajectory.z, out.trajectory.s)
    assert torch.equal(again, out.recon)


def test_reconstruction_free_mode_has_no_decoder_and_an_ema_target():
    model = WorldModel(_tiny(loss={"objective": "latent_prediction"}))
    assert model.decoder is None
    assert not any(n.startswith("decoder") for n, _ in model.named_parameters())
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    out = model(*_inputs(model.cfg))
    assert out.recon is None and "latent_pred_loss" in out.metrics
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out.loss.backward()
    opt.step()
    before = model.target_encoder.patch_embed.weight.clone()
    model.update_ema()
    after = model.target_encoder.patch_embed.weight
    online = model.encoder.patch_embed.weight
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, 0.99 * before + 0.01 * online)
    with pytest.raises(RuntimeError, match="no pixel decoder"):
        model.decode(out.trajectory.h, out.trajectory.z, out.trajectory.s)


def test_modules_an_objective_does_not_use_are_none_not_absent():
    model = WorldModel(_tiny())
    unused = ("target_encoder", "predictor", "local_predictor", "projector")
    assert all(getattr(model, name) is None for name in unused)
    model.update_ema()  # no target encoder: a no-op
    global_only = WorldModel(_tiny(loss={"objective": "latent_prediction", "contrastive": "barlow"},
                                   rssm={"local_grid": 0}))
    assert global_only.decoder is None and global_only.local_predictor is None
    assert global_only.target_encoder is not None and global_only.projector is not None


def test_loss_is_the_sum_of_its_named_terms():
    model = WorldModel(_tiny(loss={"contrastive": "barlow"}))
    out = model(*_inputs(model.cfg))
    cfg, m = model.cfg.loss, out.metrics
    terms = (m["kl_global_loss"] + m["kl_local_loss"] + cfg.recon_scale * m["recon_loss"]
             + cfg.contrastive_scale * m["contrastive_loss"])
    torch.testing.assert_close(out.loss.detach(), terms)


def test_contrastive_pairs_all_compares_every_pair_of_views():
    from hrssm import objectives

    torch.manual_seed(0)
    for kind in ("barlow", "simclr"):
        model = WorldModel(_tiny(loss={"contrastive": kind, "contrastive_input": "tokens", "contrastive_pairs": "all"}))
        source = torch.randn(8, 3, model.cfg.encoder.width)  # (B, T, F) mean tokens
        proj = model.projector(source)
        got = model._contrastive(source)[1]["contrastive_loss"]
        if kind == "barlow":  # the mean over the pairs (0, 1), (0, 2), (1, 2)
            want = sum(objectives.barlow_twins_loss(proj[:, i], proj[:, j], model.cfg.loss.barlow_lambda)
                       for i, j in ((0, 1), (0, 2), (1, 2))) / 3
        else:  # one softmax over all 24 views
            want = objectives.multiview_simclr_loss(proj, model.cfg.loss.simclr_temperature)
        torch.testing.assert_close(got, want)
        consecutive = WorldModel(_tiny(loss={"contrastive": kind, "contrastive_input": "tokens"}))
        consecutive.projector.load_state_dict(model.projector.state_dict())
        assert not torch.allclose(consecutive._contrastive(source)[1]["contrastive_loss"], got)


def test_encoder_pool_mean_feeds_the_mean_token_to_the_global_posterior():
    model = WorldModel(_tiny(encoder={"pool": "mean"})).eval()
    images = torch.rand(3, 3, 32, 32) - 0.5
    embed, tokens = model.encoder(images)
    torch.testing.assert_close(embed, tokens.mean(1))
    with torch.no_grad():  # z's logits at t = 0 are linear in the embedding: they follow the mean token
        want = model.rssm.post_global_obs(tokens.mean(1)) + model.rssm.post_global_state(
            model.rssm.initial(3).h)
    z = model.encode_latents(images)["z"].unflatten(-1, (model.cfg.rssm.stoch, model.cfg.rssm.classes))
    assert torch.equal(z.argmax(-1), want.unflatten(-1, z.shape[1:]).argmax(-1))
    cls_model = WorldModel(_tiny())
    cls_model.load_state_dict(model.state_dict())
    assert not torch.equal(cls_model.encoder(images)[0], embed)  # "cls" (the default) reads the CLS token


def test_contrastive_only_step_trains_the_encoder_and_projector_alone():
    model = WorldModel(_tiny(loss={"contrastive": "simclr", "contrastive_input": "tokens"}))
    views, actions = _inputs(model.cfg, b=4)
    out = model(views, actions, contrastive_only=True)
    assert out.recon is None and out.trajectory is None
    assert set(out.metrics) == {"contrastive_loss", "loss"}
    torch.testing.assert_close(out.loss, model.cfg.loss.contrastive_scale * out.metrics["contrastive_loss"])
    out.loss.backward()
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {"encoder", "projector"}
    assert all(p.grad.isfinite().all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="contrastive_only needs loss.contrastive"):
        WorldModel(_tiny())(views, actions, contrastive_only=True)


def test_contrastive_only_step_reads_smaller_views_and_full_steps_refuse_them():
    """The contrastive warm-up's smaller views (optim.contrastive_warmup_image_size): the encoder alone reads
    them, with positions that cover the whole image; the world model's steps keep the model's size."""
    model = WorldModel(_tiny(64, encoder={"input_filter": "rgb+sobel", "stem": "conv", "width": 256},
                             loss={"contrastive": "simclr", "contrastive_input": "tokens"}))
    views, actions = _inputs(model.cfg, b=4, t=2)
    small = views[..., ::2, ::2]  # (4, 2, 3, 32, 32): a 4x4 token grid instead of 8x8
    out = model(small, actions, contrastive_only=True)
    out.loss.backward()
    assert out.loss.isfinite()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.encoder.parameters())
    _, tokens = model.encoder(small.flatten(0, 1))
    assert tokens.shape == (8, 16, 256)
    with pytest.raises(ValueError, match=r"views must be \(B, T, 3, 64, 64\)"):
        model(small, actions)
    with pytest.raises(ValueError, match=r"views must be \(B, T, 3, 64, 64\).*also takes square views of a multiple "
                                         r"of 8 below it"):
        model(views[..., :36, :36], actions, contrastive_only=True)  # not a multiple of the patch size
    assert model.encoder.rgb._positions(4) is model.encoder.rgb._positions(4)  # made once, not every step


def test_positions_of_a_smaller_grid_are_those_of_the_same_image_points():
    from vit_decoder.layers import sincos_pos_embed_2d

    torch.testing.assert_close(sincos_pos_embed_2d(16, 8, span=8), sincos_pos_embed_2d(16, 8), rtol=0, atol=0)
    small = sincos_pos_embed_2d(16, 4, span=8).reshape(4, 4, 16)
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float64) / 4)
    # token (row 0, column 1) of a 4x4 grid covers patches 2-3 of the 8x8 grid: its centre is at x = 2.5, y = 0.5
    want_x = torch.cat([(2.5 * omega).sin(), (2.5 * omega).cos()]).float()
    want_y = torch.cat([(0.5 * omega).sin(), (0.5 * omega).cos()]).float()
    torch.testing.assert_close(small[0, 1], torch.cat([want_x, want_y]))


@pytest.mark.parametrize("name, scale", [("tiny", 2e4), ("base", 2.5e6)])
def test_the_presets_are_issue_12s_recipe(name, scale):
    cfg = ModelConfig.preset(name)
    enc, loss = cfg.encoder, cfg.loss
    assert (enc.input_filter, enc.stem, enc.pool) == ("rgb+sobel", "conv", "mean")
    assert (loss.contrastive, loss.contrastive_input, loss.contrastive_scale, loss.simclr_temperature) == (
        "simclr", "tokens", scale, 0.2)


def test_the_main_jobs_configs_train_the_tiny_preset_and_every_parameter_of_it_trains():
    from hrssm.train_config import TrainConfig

    tiny = ModelConfig.preset("tiny")
    assert TrainConfig.load("recipes/configs/demo.yaml").model_config() == tiny  # the config spells the preset out
    twin = TrainConfig.load("recipes/configs/twin_quality.yaml").model_config()
    assert twin == ModelConfig.preset("tiny", loss={"recon_scale": 300, "contrastive_pairs": "all"})
    model = WorldModel(ModelConfig.preset("tiny", image_size=32))
    out = model(*_inputs(model.cfg, b=4, t=2))
    out.loss.backward()
    assert {"contrastive_loss/rgb", "contrastive_loss/sobel"} <= set(out.metrics)
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_one_view_or_one_image_has_no_contrastive_term_and_a_contrastive_only_step_refuses_it():
    model = WorldModel(_tiny(loss={"contrastive": "simclr", "contrastive_input": "tokens"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = model(*_inputs(model.cfg, t=1)).metrics  # e.g. metrics on single images: nothing to compare
    assert "contrastive_loss" not in single and "contrastive_loss" in model(*_inputs(model.cfg, t=2)).metrics
    assert "contrastive_loss" not in model(*_inputs(model.cfg, b=1, t=2)).metrics  # one image: no negatives
    with pytest.raises(ValueError, match=r"compares the views of an image, got 1 per image: use views.num_views >= 2"):
        model(*_inputs(model.cfg, t=1), contrastive_only=True)


def test_bad_inputs_are_refused_with_the_fix():
    model = WorldModel(_tiny())
    views, actions = _inputs(model.cfg)
    with pytest.raises(ValueError, match=r"views must be \(B, T, 3, 32, 32\).*hrssm.data.preprocess"):
        model(views[..., :16, :16], actions)
    with pytest.raises(ValueError, match=r"actions must be \(B, T, 1\)"):
        model(views, actions[:, :1])
    with pytest.raises(TypeError, match="float"):
        model((views * 255).to(torch.uint8), actions)


@pytest.mark.parametrize("over, match", [
    ({"image_size": 60}, r"model.image_size=60 is not a multiple of model.encoder.patch_size=8"),
    ({"image_size": 48, "rssm": {"local_grid": 4}}, r"rssm.local_grid=4 must divide the patch grid 6.*\[1, 2, 3, 6\]"),
    ({"encoder": {"width": 130}}, r"encoder.width=130 must be divisible"),
    ({"loss": {"objective": "diffusion"}}, r"loss.objective='diffusion' must be one of"),
    ({"loss": {"free_nats_local": -1}}, r"loss.free_nats_local=-1 must be a number >= 0"),
    ({"rssm": {"deter": 0}}, r"rssm.deter=0 must be a positive integer"),
    ({"rssm": {"gru": 3}}, r"unknown key model.rssm.gru; valid keys of model.rssm: classes, deter"),
    ({"decoder_width": 3}, r"unknown key model.decoder_width"),
    ({"encoder": {"stem": "conv", "patch_size": 4}, "image_size": 48, "rssm": {"local_grid": 2}},
     None),  # a power of two: fine
    ({"encoder": {"stem": "conv", "patch_size": 6}, "image_size": 48, "rssm": {"local_grid": 2}},
     r"encoder.stem='conv' needs a power-of-two model.encoder.patch_size"),
    ({"encoder": {"stem": "resnet"}}, r"encoder.stem='resnet' must be one of"),
    ({"encoder": {"input_filter": "rgb+sobel", "width": 132}},
     r"input_filter='rgb\+sobel' is two streams of width / 2.*width=132 must be divisible by 8"),
    ({"encoder": {"input_filter": "rgb+sobel", "stem": "conv", "patch_size": 16, "width": 136}, "image_size": 64,
      "rssm": {"local_grid": 2}}, r"width=136 must be divisible by 16 \(two streams of width / 2\)"),
])
def test_config_errors_name_the_key(over, match):
    if match is None:
        ModelConfig.preset("tiny", **over)
        return
    with pytest.raises(ValueError, match=match):
        ModelConfig.preset("tiny", **over)


@pytest.mark.parametrize("patch, size", [(4, 32), (8, 64), (16, 64)])
def test_conv_stem_makes_one_token_per_patch_and_keeps_images_independent(patch, size):
    from hrssm.encoder import ViTEncoder

    cfg = plain_tiny(image_size=size, encoder={"stem": "conv", "patch_size": patch}, rssm={"local_grid": 2})
    encoder = ViTEncoder(size, cfg.encoder).eval()
    x = torch.rand(3, 3, size, size) - 0.5
    cls, tokens = encoder(x)
    assert cls.shape == (3, cfg.encoder.width) and tokens.shape == (3, (size // patch) ** 2, cfg.encoder.width)
    convs = [m for m in encoder.patch_embed if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == patch.bit_length() - 1 and convs[-1].out_channels == cfg.encoder.width
    torch.testing.assert_close(encoder(x[:1])[1], tokens[:1])  # GroupNorm: no batch statistics


def test_sobel_input_filter_hides_colour_from_the_encoder_and_keeps_edges():
    from hrssm.data.augment import LUMA
    from hrssm.encoder import SobelFilter, ViTEncoder

    luma = torch.tensor(LUMA)
    image = torch.rand(2, 3, 32, 32) - 0.5
    chroma = torch.linalg.svd(luma[None]).Vh[1:]  # (2, 3): colour directions of zero luma
    recoloured = image + 0.05 * torch.einsum("kc,nkhw->nchw", chroma, torch.randn(2, 2, 32, 32))
    cfg = plain_tiny(image_size=32, encoder={"patch_size": 4, "input_filter": "sobel"})
    encoder = ViTEncoder(32, cfg.encoder).eval()
    torch.testing.assert_close(encoder(recoloured)[1], encoder(image)[1], atol=1e-4, rtol=1e-4)  # same luma
    rgb = ViTEncoder(32, plain_tiny(image_size=32, encoder={"patch_size": 4}).encoder).eval()
    rgb.load_state_dict(encoder.state_dict())  # the filter has no state: one state dict fits both
    assert not torch.allclose(rgb(recoloured)[1], rgb(image)[1], atol=1e-3)
    edge = torch.zeros(1, 3, 8, 8)
    edge[..., 4:] = 0.5  # a vertical edge: gradient across it in x only
    grad = SobelFilter()(edge - 0.25)
    assert grad[0, 0, :, 3:5].abs().min() > 1.0 and grad[0, 1].abs().max() < 1e-6
    torch.testing.assert_close(grad[0, 2], grad[0, 0].abs(), atol=2e-3, rtol=0)  # magnitude
    assert grad[0, :2, :, :3].abs().max() == 0  # flat away from the edge
    with pytest.raises(ValueError, match="input_filter"):
        ModelConfig.preset("tiny", encoder={"input_filter": "edges"})
    with pytest.raises(ValueError, match="luma of RGB images"):
        ModelConfig.preset("tiny", channels=1, encoder={"input_filter": "sobel"})


def test_two_stream_encoder_concatenates_an_rgb_stream_and_a_colour_blind_sobel_stream():
    from hrssm.data.augment import LUMA
    from hrssm.encoder import TwoStreamEncoder, ViTEncoder, build_encoder

    cfg = plain_tiny(image_size=32, encoder={"patch_size": 4, "input_filter": "rgb+sobel"})
    encoder = build_encoder(32, cfg.encoder).eval()
    assert isinstance(encoder, TwoStreamEncoder) and encoder.rgb.cfg.width == encoder.sobel.cfg.width == 64
    image = torch.rand(2, 3, 32, 32) - 0.5
    embed, tokens = encoder(image)
    assert embed.shape == (2, 128) and tokens.shape == (2, 64, 128)
    torch.testing.assert_close(tokens, torch.cat([encoder.rgb(image)[1], encoder.sobel(image)[1]], -1))  # RGB first
    chroma = torch.linalg.svd(torch.tensor(LUMA)[None]).Vh[1:]  # (2, 3): colour directions of zero luma
    recoloured = image + 0.05 * torch.einsum("kc,nkhw->nchw", chroma, torch.randn(2, 2, 32, 32))
    rgb_half, sobel_half = encoder(recoloured)[1].chunk(2, -1)
    torch.testing.assert_close(sobel_half, tokens[..., 64:], atol=1e-4, rtol=1e-4)  # same luma, same Sobel half
    assert not torch.allclose(rgb_half, tokens[..., :64], atol=1e-3)
    with pytest.raises(ValueError, match="two streams: build it with `build_encoder`"):
        ViTEncoder(32, cfg.encoder)
    with pytest.raises(ValueError, match="luma of RGB images"):
        ModelConfig.preset("tiny", channels=1, encoder={"input_filter": "rgb+sobel"})


def test_two_stream_contrastive_trains_each_stream_as_if_it_were_alone():
    loss = {"contrastive": "simclr", "contrastive_input": "tokens", "contrastive_pairs": "all"}
    model = WorldModel(_tiny(loss=loss, encoder={"input_filter": "rgb+sobel", "pool": "mean"}))
    views, actions = _inputs(model.cfg, b=4)
    out = model(views, actions, contrastive_only=True)
    m = out.metrics
    torch.testing.assert_close(m["contrastive_loss"], m["contrastive_loss/rgb"] + m["contrastive_loss/sobel"])
    for stream, projector in (("rgb", model.projector), ("sobel", model.sobel_projector)):
        alone = WorldModel(_tiny(loss=loss, encoder={"input_filter": stream, "pool": "mean", "width": 64}))
        alone.encoder.load_state_dict(getattr(model.encoder, stream).state_dict())
        alone.projector.load_state_dict(projector.state_dict())
        torch.testing.assert_close(alone(views, actions, contrastive_only=True).metrics["contrastive_loss"],
                                   m[f"contrastive_loss/{stream}"])
    out.loss.backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {name for name, _ in model.named_parameters()
                       if name.split(".")[0] in ("encoder", "projector", "sobel_projector")}
    assert any(name.startswith("encoder.sobel.") for name in trained)


def test_config_round_trip_and_overrides():
    cfg = ModelConfig.preset("tiny", loss={"recon_scale": 3.0})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert parse_overrides(["loss.recon_scale=10", "rssm.local_grid=0", "loss.contrastive=barlow"]) == {
        "loss": {"recon_scale": 10, "contrastive": "barlow"}, "rssm": {"local_grid": 0}}
    assert parse_overrides(["loss.recon_scale=1e-4", "x=1.5e3", "y=true", "z=abc"]) == {
        "loss": {"recon_scale": 1e-4}, "x": 1500.0, "y": True, "z": "abc"}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["loss.recon_scale"])
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        ModelConfig.preset("huge")


def test_under_bf16_autocast_the_distributions_and_losses_stay_fp32():
    torch.manual_seed(0)
    model = WorldModel(ModelConfig.preset("tiny", image_size=32))  # the preset: two streams, SimCLR
    views, actions = torch.rand(2, 3, 3, 32, 32) - 0.5, torch.zeros(2, 3, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(views, actions)
    assert out.recon.dtype == torch.bfloat16  # the decoder did run in bf16
    traj = out.trajectory
    for name in ("z", "s", "prior_global", "post_global", "prior_local", "post_local"):
        assert getattr(traj, name).dtype == torch.float32, name
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.metrics.values())
    barlow = WorldModel(ModelConfig.preset("tiny", image_size=32, loss={"contrastive": "barlow"}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert barlow(views, actions).metrics["contrastive_loss"].dtype == torch.float32
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_legacy_defaults_fill_what_old_files_meant_without_touching_the_input():
    from hrssm.config import with_legacy_defaults

    old = {"encoder": {"width": 64}, "loss": {"contrastive": "barlow"}}
    filled = with_legacy_defaults(old)
    assert old == {"encoder": {"width": 64}, "loss": {"contrastive": "barlow"}}  # the input is not changed
    assert filled["encoder"] == {"width": 64, "pool": "cls"} and filled["decoder"] == {"conv_channels": 0}
    assert filled["loss"]["contrastive_input"] == "z" and filled["loss"]["contrastive_pairs"] == "consecutive"
    no_contrastive = with_legacy_defaults({"loss": {}})["loss"]  # the keys change nothing there: today's defaults
    assert no_contrastive["contrastive_input"] == "tokens" and no_contrastive["contrastive_pairs"] == "consecutive"
    assert with_legacy_defaults({"loss": {"contrastive_input": "tokens", "contrastive": "simclr"}})["loss"][
        "contrastive_input"] == "tokens"  # a key the file has is kept
