import numpy as np
import pytest
import torch

from hrssm.data import ViewCollator, ViewConfig, load_waterbirds, make_views
from hrssm.data.views import augment, reference_augment, views_from_base
from hrssm.errors import ConfigError


@pytest.fixture
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.5


@pytest.mark.parametrize("mode", ["repeat", "augment"])
def test_shapes_range_dtype(images, mode):
    views, actions = make_views(images, ViewConfig(num_views=5, mode=mode, action_dim=2))
    assert views.shape == (3, 5, 3, 16, 16) and views.dtype == torch.float32
    assert views.min() >= -0.5 and views.max() <= 0.5
    assert actions.shape == (3, 5, 2) and not actions.any()


def test_repeat_gives_identical_views(images):
    views, _ = make_views(images, ViewConfig(num_views=4, mode="repeat"))
    for t in range(4):
        assert torch.equal(views[:, t], images)


def test_augment_gives_different_views_keyed_per_image(images):
    cfg = ViewConfig(num_views=4, mode="augment")
    keys = [(0, 0, 10), (0, 0, 11), (0, 0, 12)]
    views, _ = make_views(images, cfg, keys=keys)
    for b in range(3):
        for t in range(1, 4):
            assert (views[b, t] - views[b, 0]).abs().mean() > 1e-3
    # same key -> same views, whatever else is in the batch; another epoch -> other views
    alone, _ = make_views(images[1:2], cfg, keys=[keys[1]])
    assert torch.allclose(alone[0], views[1], atol=1e-6)
    next_epoch, _ = make_views(images, cfg, keys=[(0, 1, k[2]) for k in keys])
    assert (next_epoch - views).abs().mean() > 1e-3


def test_identity_and_flip_geometry(images):
    cfg = ViewConfig(num_views=2, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0, contrast=0, saturation=0)
    u = torch.full((3, 2, 8), 0.5)
    u[:, 0, 4] = 0.9  # no flip
    u[:, 1, 4] = 0.1  # flip
    out = augment(images, u, cfg)
    assert torch.allclose(out[:, 0], images, atol=1e-5)
    assert torch.allclose(out[:, 1], images.flip(-1), atol=1e-5)


def test_colour_jitter_changes_colour_not_geometry(images):
    cfg = ViewConfig(num_views=1, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False)
    u = torch.full((3, 1, 8), 0.5)
    u[..., 5] = 1.0  # brightness x1.1
    out = augment(images, u, cfg)
    assert torch.allclose(out[:, 0], ((images + 0.5) * 1.1 - 0.5).clamp(-0.5, 0.5), atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_views": 0}, "num_views"),
    ({"mode": "shuffle"}, "views.mode='shuffle' must be one of 'repeat', 'augment', 'edit'"),
    ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
    ({"crop_scale": [0.5, 2.0]}, r"crop_scale=\(0.5, 2.0\)"),  # a list (YAML) becomes the annotated tuple
    ({"brightness": 1.5}, "brightness"),
    ({"action_dim": 0}, "action_dim"),
    ({"grayscale": 1.2}, "views.grayscale"),
    ({"paste": -0.1}, "views.paste"),
    ({"paste_radius": 0}, "views.paste_radius"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewConfig(**kwargs)


def test_make_views_refuses_unit_range_pixels():
    with pytest.raises(ValueError, match="subtract 0.5"):
        make_views(torch.rand(1, 3, 8, 8) * 0.5 + 0.5, ViewConfig())


def test_collator_over_a_dataloader(synthetic_disk):
    ds = load_waterbirds(synthetic_disk, "train")
    collate = ViewCollator(image_size=24, views=ViewConfig(num_views=3), seed=7)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=collate, num_workers=0)
    batch = next(iter(loader))
    assert batch["views"].shape == (8, 3, 3, 24, 24) and batch["actions"].shape == (8, 3, 1)
    assert batch["label"].tolist() == ds["label"][:8] and batch["group"].dtype == torch.int64
    again = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=collate)))
    assert torch.equal(again["views"], batch["views"])  # seeded
    collate.set_epoch(1)
    assert not torch.equal(next(iter(loader))["views"], batch["views"])
    assert np.isfinite(batch["views"].numpy()).all()


# -- the fast augment against its definition, and the on-device path ------------------------------------------------

def _uniforms(b, t, seed=0):
    return torch.rand(b, t, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [(16, 16), (24, 40)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_equals_its_grid_sample_definition(size, dtype):
    gen = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (3, 3, *size), dtype=torch.uint8, generator=gen)
    cfg = ViewConfig(num_views=5, crop_scale=(0.3, 1.0), brightness=0.4, contrast=0.4, saturation=0.4)
    u = _uniforms(3, 5)
    u[0, :, 4] = 0.2  # flipped views and unflipped ones
    u[1, :, 4] = 0.8
    want = reference_augment(u8.float() / 255 - 0.5, u, cfg)
    got = augment(u8 if dtype == torch.uint8 else u8.float() / 255 - 0.5, u, cfg)
    assert got.shape == want.shape == (3, 5, 3, *size) and got.dtype == torch.float32
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("hue", [0.0, 0.3])
def test_grayscale_paste_and_hue_equal_their_definition(dtype, hue):
    gen = torch.Generator().manual_seed(3)
    u8 = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=gen)
    cfg = ViewConfig(num_views=3, crop_scale=(0.3, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, grayscale=0.5,
                     paste=0.7, hue=hue)
    u = torch.rand(4, 3, 13, generator=gen)
    want = reference_augment(u8.float() / 255 - 0.5, u, cfg)
    got = augment(u8 if dtype == torch.uint8 else u8.float() / 255 - 0.5, u, cfg)
    assert (got - want).abs().max() < 1e-4


def test_grayscale_turns_exactly_the_chosen_views_gray(images):
    cfg = ViewConfig(num_views=2, grayscale=0.5)
    u = torch.rand(3, 2, 12, generator=torch.Generator().manual_seed(4))
    u[:, 0, 8], u[:, 1, 8] = 0.2, 0.8  # view 0 gray, view 1 in colour
    views = augment(images, u, cfg)
    assert (views[:, 0].amax(1) - views[:, 0].amin(1)).abs().max() < 1e-5  # R = G = B
    assert (views[:, 1].amax(1) - views[:, 1].amin(1)).abs().max() > 0.1
    colour = augment(images, u[..., :8], cfg)  # without the extra uniforms: no grayscale, the same crop and jitter
    assert torch.allclose(colour[:, 1], views[:, 1], atol=1e-6)


def test_hue_turns_colours_about_the_gray_axis(images):
    cfg = ViewConfig(num_views=2, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, brightness=0,
                     contrast=0, saturation=0, hue=0.5)
    u = torch.full((3, 2, 13), 0.5)
    u[:, 0, 12] = 5 / 6  # (2u - 1) x 0.5 = a third of a turn: red -> green -> blue -> red
    views = augment(images, u, cfg)
    torch.testing.assert_close(views[:, 0], images.roll(1, dims=1), atol=1e-5, rtol=0)  # (R, G, B) <- (B, R, G)
    torch.testing.assert_close(views[:, 1], images, atol=1e-5, rtol=0)  # u = 0.5: no turn
    gray = images.mean(1, keepdim=True).expand_as(images)
    torch.testing.assert_close(augment(gray, torch.rand(3, 2, 13), cfg), gray[:, None].expand(3, 2, 3, 16, 16),
                               atol=1e-5, rtol=0)  # gray stays gray at any turn
    assert torch.equal(augment(images, u[..., :12], cfg), augment(images, u[..., :12], ViewConfig(
        **{**cfg.to_dict(), "hue": 0.0})))  # without the 13th uniform: no turn
    with pytest.raises(ConfigError, match="views.hue"):
        ViewConfig(hue=0.7)


def test_paste_keeps_the_centre_and_takes_another_images_background():
    images = torch.stack([torch.full((3, 32, 32), v) for v in (-0.4, 0.0, 0.4)])  # flat images: -0.4, 0, 0.4
    cfg = ViewConfig(num_views=2, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0, contrast=0,
                     saturation=0, paste=1.0, paste_radius=0.5)
    u = torch.full((3, 2, 12), 0.5)
    u[..., 11] = 0.25  # the disk centred (shift 0 in x and y)
    views = augment(images, u, cfg)
    for i in range(3):
        for t in range(2):
            partner = (i - t - 1) % 3
            assert views[i, t, :, 16, 16].sub(images[i, 0, 0, 0]).abs().max() < 1e-3  # the centre: the own image
            assert views[i, t, :, 0, 0].sub(images[partner, 0, 0, 0]).abs().max() < 1e-3  # a corner: the partner's
    u[..., 9] = 0.6  # above paste = 0.5: not drawn, the own image everywhere
    half = ViewConfig(**{**cfg.to_dict(), "paste": 0.5})
    assert torch.allclose(augment(images, u, half), images[:, None].expand(3, 2, 3, 32, 32), atol=1e-5)


def test_view_uniforms_keep_the_earlier_uniforms_of_every_key():
    from hrssm.data.views import view_uniforms

    u = view_uniforms([(0, 1, 7)], 3)
    assert u.shape == (1, 3, 13)
    rng = np.random.default_rng([0, 1, 7])
    first, extra = rng.random((3, 8)), rng.random((3, 4))  # the stream as it was before the hue's uniform
    assert torch.equal(u[0, :, :12], torch.from_numpy(np.concatenate([first, extra], 1)).float())


def test_augment_does_not_depend_on_how_views_are_chunked():
    u8 = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    cfg, u = ViewConfig(num_views=3), _uniforms(4, 3)
    one = augment(u8, u, cfg, chunk=1)
    for chunk in (5, 12, 100):
        assert (augment(u8, u, cfg, chunk=chunk) - one).abs().max() < 1e-5


def test_augment_refuses_uniforms_that_do_not_fit_the_batch():
    with pytest.raises(ValueError, match="view_uniforms"):
        augment(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.rand(3, 4, 8), ViewConfig())


def _devices():
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device: run on a GPU machine"))]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("mode", ["augment", "repeat", "edit"])
def test_views_made_from_base_batches_on_a_device_equal_the_loader_views(synthetic_disk, mode, device):
    from hrssm.data.counterfactual import add_counterfactuals

    ds = load_waterbirds(synthetic_disk, "validation")
    if mode == "edit":
        ds = add_counterfactuals(ds, "validation", seed=0)
    rows = [ds[i] for i in range(6)]
    cfg = ViewConfig(num_views=3, mode=mode)
    loader_batch = ViewCollator(32, cfg, seed=3)(rows)
    base = ViewCollator(32, cfg, seed=3, base_only=True)(rows)
    assert base["images"].dtype == torch.uint8 and base["images"].shape == (6, 3, 32, 32)
    assert base["keys"].tolist() == [[3, 0, int(r["img_id"])] for r in rows]
    views, actions = views_from_base({k: v.to(device) for k, v in base.items()}, cfg)
    assert views.device.type == device and views.dtype == torch.float32
    assert torch.equal(actions.cpu(), loader_batch["actions"])
    if device == "cpu":
        assert torch.equal(views, loader_batch["views"])  # the same function on the same device: bit-exact
    else:
        assert (views.cpu() - loader_batch["views"]).abs().max() < 1e-4


def test_base_batches_follow_the_epoch():
    rows = [{"image": torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8), "img_id": i} for i in range(2)]
    collate = ViewCollator(16, ViewConfig(num_views=2), seed=0, base_only=True)
    first = collate(rows)
    collate.set_epoch(1)
    second = collate(rows)
    assert torch.equal(first["images"], second["images"]) and first["images"].shape == (2, 3, 16, 16)
    assert second["keys"][:, 1].tolist() == [1, 1]
    assert not torch.equal(first["view_params"], second["view_params"])
