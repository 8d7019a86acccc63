"""The tiny model learns to reconstruct, and the diagnostics flag deliberately collapsed configurations."""

import warnings

import pytest
from conftest import plain_tiny

from hrssm.data import synthetic
from hrssm.sanity import overfit


@pytest.fixture(scope="module")
def images64():
    return synthetic.train_images(64, 64, scale=0.02)


def _run(images, steps, **over):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # T = 1 warns that the transition is not trained
        # the plain tiny (one RGB stream, no contrastive term: single views), as docs/model.md's rows were measured
        return overfit(plain_tiny(**over), images, steps=steps)


@pytest.mark.slow
def test_tiny_model_overfits_64_images(images64):
    res = _run(images64, steps=800)
    assert res.eval["recon_std_ratio"] > 0.7, res.eval
    assert res.eval["psnr"] >= res.eval["psnr_mean_image"] + 8.0, res.eval
    assert not res.report.collapsed, res.report.message


@pytest.mark.slow
def test_huge_free_nats_and_tiny_recon_weight_are_flagged(images64):
    res = _run(images64, steps=100, loss={"free_nats_global": 1e4, "free_nats_local": 1e4, "recon_scale": 1e-4})
    assert res.report.collapsed
    assert {"dead_kl_global", "dead_kl_local"} <= set(res.report.signals)
    assert "lower loss.free_nats_global" in res.report.message


@pytest.mark.slow
def test_a_kl_that_wins_gives_the_mean_image_and_is_flagged(images64):
    res = _run(images64, steps=150, loss={"free_nats_global": 0.0, "free_nats_local": 0.0, "recon_scale": 1e-4})
    assert res.train["psnr_gain"] < 1.0
    assert "no_better_than_mean_image" in res.report.signals
    assert "raise loss.recon_scale" in res.report.message
