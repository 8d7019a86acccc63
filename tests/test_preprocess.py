import numpy as np
import pytest
import torch
from PIL import Image

from hrssm.data import check_pixel_range, preprocess, resize_center_crop, to_pil, to_uint8


@pytest.fixture
def image_u8():
    return np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)


def test_every_input_kind_gives_the_same_tensor(image_u8):
    chw = torch.from_numpy(image_u8).permute(2, 0, 1)
    ref = preprocess(Image.fromarray(image_u8), 20)
    assert ref.shape == (1, 3, 20, 20) and ref.dtype == torch.float32
    assert ref.min() >= -0.5 and ref.max() <= 0.5
    for other in (image_u8, [image_u8], chw, chw[None], [chw], ref, ref[0]):
        assert torch.equal(preprocess(other, 20), ref)


def test_uint8_round_trip_is_exact(image_u8):
    x = preprocess(image_u8, 20)
    assert torch.equal(to_uint8(x[0]).permute(1, 2, 0), torch.from_numpy(image_u8))
    assert np.array_equal(np.asarray(to_pil(x[0])), image_u8)


def test_idempotent_and_resizes_mixed_sizes(image_u8):
    x = preprocess([image_u8, np.zeros((10, 30), np.uint8)], 12)
    assert x.shape == (2, 3, 12, 12)
    assert torch.equal(preprocess(x, 12), x)
    assert torch.all(x[1] == -0.5)  # grayscale HW becomes 3 equal channels


def test_center_crop_keeps_the_middle():
    wide = torch.zeros(3, 10, 30, dtype=torch.uint8)
    wide[1, :, 10:20] = 255
    out = resize_center_crop(wide, 10)
    assert out.shape == (3, 10, 10) and out.dtype == torch.uint8
    assert (out[1] == 255).all() and (out[0] == 0).all()
    out = resize_center_crop(wide, 8, crop_fraction=0.8)  # resize the short side to 10, crop 8
    assert out.shape == (3, 8, 8) and (out[1] == 255).all()


def test_range_mismatch_is_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"\[-0\.5, 0\.5\].*look like \[0, 1\] pixels: subtract 0\.5"):
        preprocess(torch.rand(2, 3, 8, 8), 8)
    with pytest.raises(ValueError, match=r"got values in \[-1\.000"):
        check_pixel_range(torch.full((3, 4, 4), -1.0))


@pytest.mark.parametrize("bad, err", [
    (np.zeros((4, 4, 3), np.float32), TypeError),
    (np.zeros((4, 4, 2), np.uint8), ValueError),
    (torch.zeros(2, 5, 4, 4, dtype=torch.uint8), ValueError),
    ("image.png", TypeError),
    ([], ValueError),
])
def test_bad_inputs(bad, err):
    with pytest.raises(err):
        preprocess(bad, 4)
