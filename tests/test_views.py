import numpy as np
import pytest
import torch

from hrssm.data import ViewCollator, ViewConfig, load_waterbirds, make_views
from hrssm.data.views import augment


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
