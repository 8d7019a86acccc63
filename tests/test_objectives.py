import math

import pytest
import torch

from hrssm import objectives
from hrssm.diagnostics import diagnose_collapse, image_metrics
from hrssm.distributions import categorical_kl, gaussian_kl, straight_through_sample, unimix_log_probs


def test_kl_below_free_nats_has_no_gradient_above_it_does():
    prior = unimix_log_probs(torch.zeros(4, 8, 8), 0.01).requires_grad_()
    near = unimix_log_probs(torch.randn(4, 8, 8) * 0.1, 0.01).requires_grad_()
    far = unimix_log_probs(torch.randn(4, 8, 8) * 5, 0.01).requires_grad_()
    loss, raw = objectives.balanced_kl(near, prior, 0.5, 0.1, free_nats=1.0)
    assert (raw < 1.0).all() and torch.allclose(loss, torch.full((4,), 0.6))
    loss.sum().backward()
    assert near.grad.abs().max() == 0 and prior.grad.abs().max() == 0
    loss, raw = objectives.balanced_kl(far, prior, 0.5, 0.1, free_nats=1.0)
    assert (raw > 1.0).all()
    loss.sum().backward()
    assert far.grad.abs().max() > 0 and prior.grad.abs().max() > 0


def test_kl_balancing_routes_dyn_to_the_prior_and_rep_to_the_posterior():
    post = unimix_log_probs(torch.randn(3, 4, 5) * 3, 0.01)
    prior = unimix_log_probs(torch.randn(3, 4, 5) * 3, 0.01)
    for dyn, rep, grad_post, grad_prior in ((1.0, 0.0, False, True), (0.0, 1.0, True, False)):
        q, p = post.clone().requires_grad_(), prior.clone().requires_grad_()
        loss, raw = objectives.balanced_kl(q, p, dyn, rep, free_nats=0.0)
        torch.testing.assert_close(loss, (dyn + rep) * categorical_kl(post, prior))
        loss.sum().backward()
        assert (q.grad.abs().sum() > 0) == grad_post and (p.grad.abs().sum() > 0) == grad_prior


def test_gaussian_kl_matches_torch_distributions():
    a = torch.stack([torch.randn(5, 7), torch.rand(5, 7) + 0.1], dim=-2)
    b = torch.stack([torch.randn(5, 7), torch.rand(5, 7) + 0.1], dim=-2)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(a[:, 0], a[:, 1]),
                                            torch.distributions.Normal(b[:, 0], b[:, 1])).sum(-1)
    torch.testing.assert_close(gaussian_kl(a, b), ref)


def test_straight_through_samples_are_one_hot_with_gradients():
    logits = torch.randn(6, 4, 5, requires_grad=True)
    s = straight_through_sample(unimix_log_probs(logits, 0.01))
    v = s.detach()
    assert torch.allclose(v, v.round(), atol=1e-6) and torch.equal(v.round().sum(-1), torch.ones(6, 4))
    (s * torch.randn_like(s)).sum().backward()
    assert logits.grad.abs().sum() > 0
    mode = straight_through_sample(unimix_log_probs(logits, 0.01), sample=False)
    assert torch.equal(mode.argmax(-1), logits.argmax(-1))


def test_unimix_keeps_every_class_possible():
    lp = unimix_log_probs(torch.tensor([[100.0, -100.0, -100.0, -100.0]]), 0.01)
    assert lp.exp()[0, 1:].min() >= 0.01 / 4 - 1e-7


def test_reconstruction_is_summed_per_image():
    a, b = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5)
    torch.testing.assert_close(objectives.reconstruction_loss(a, b), torch.full((2,), 0.25 * 3 * 64))
    assert objectives.reconstruction_loss(a, b, "normalized_patch", patch_size=4).shape == (2,)


def test_contrastive_losses_prefer_matching_pairs():
    a = torch.randn(32, 16)
    for fn in (objectives.simclr_loss, objectives.barlow_twins_loss):
        assert fn(a, a + 0.01 * torch.randn_like(a)) < fn(a, torch.randn(32, 16))
    with pytest.raises(ValueError, match="at least 2"):
        objectives.simclr_loss(a[:1], a[:1])


def test_multiview_simclr_with_two_views_is_nt_xent():
    torch.manual_seed(0)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    x = torch.nn.functional.normalize(torch.cat([a, b]), dim=-1)
    logits = (x @ x.T / 0.1).masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(6, 12), torch.arange(0, 6)])  # a's row i pairs with b's row i and back
    expected = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(objectives.multiview_simclr_loss(torch.stack([a, b], 1), 0.1), expected)
    torch.testing.assert_close(objectives.simclr_loss(a, b, 0.1), expected)


def test_multiview_simclr_is_supcon_with_the_other_views_as_positives():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8)  # 4 images x 3 views
    z = torch.nn.functional.normalize(x.reshape(12, 8), dim=-1)
    terms = []
    for i in range(12):  # reference loop: anchor i, its 2 positives, softmax over the 11 others
        logits = torch.stack([z[i] @ z[k] / 0.1 for k in range(12) if k != i])
        others = [k for k in range(12) if k != i]
        log_p = logits.log_softmax(0)
        terms.append(-torch.stack([log_p[others.index(k)] for k in others if k // 3 == i // 3]).mean())
    torch.testing.assert_close(objectives.multiview_simclr_loss(x, 0.1), torch.stack(terms).mean())


def test_multiview_simclr_groups_the_views_of_each_image():
    torch.manual_seed(0)
    centres = torch.randn(16, 1, 32)
    grouped = centres + 0.05 * torch.randn(16, 4, 32)  # 4 views of each image near their centre
    shuffled = grouped.flatten(0, 1)[torch.randperm(64)].unflatten(0, (16, 4))  # views of different images
    # the minimum is log(V - 1): the 3 positives of a view share its softmax mass
    assert math.log(3) - 0.01 < objectives.multiview_simclr_loss(grouped) < math.log(3) + 0.05
    assert objectives.multiview_simclr_loss(shuffled) > 5
    for bad in (grouped[:1], grouped[:, :1]):
        with pytest.raises(ValueError, match="at least 2 images with at least 2 views"):
            objectives.multiview_simclr_loss(bad)


def test_seam_score_sees_a_block_grid_and_not_smooth_images():
    from hrssm.diagnostics import seam_score

    torch.manual_seed(0)
    u = torch.linspace(0, 1, 32)
    phase = torch.rand(4, 3, 1, 1) * 6.28
    smooth = 0.3 * torch.sin(6.28 * 1.3 * u[:, None] + phase) * torch.cos(6.28 * 0.7 * u[None, :] + phase)  # waves
    blocks = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4), size=32, mode="nearest")  # 8x8 flat patches
    assert 0.8 < seam_score(smooth, 8) < 1.2
    assert seam_score(blocks + 0.01 * torch.randn_like(blocks), 8) > 10
    metrics = image_metrics(blocks, smooth, patch_size=8)
    torch.testing.assert_close(metrics["seam_ratio"], seam_score(blocks, 8) / seam_score(smooth, 8))
    assert "seam_ratio" not in image_metrics(blocks, smooth)
    assert "seam_ratio" not in image_metrics(blocks, smooth, patch_size=32)  # one patch: no border to measure
    with pytest.raises(ValueError, match="needs 1 < patch_size < the image side 32"):
        seam_score(blocks, 1)


def test_image_metrics_see_gray_and_perfect_reconstructions():
    x = torch.rand(8, 3, 16, 16) - 0.5
    gray = image_metrics(torch.zeros_like(x), x)
    assert gray["recon_std_ratio"] == 0 and gray["psnr_gain"] < 1
    perfect = image_metrics(x, x)
    assert perfect["recon_std_ratio"] == pytest.approx(1.0) and perfect["psnr"] > 90


def test_diagnose_collapse_names_the_signals_and_fixes():
    healthy = {"recon_std_ratio": 0.9, "psnr_gain": 9.0, "kl_global_floor_share": 0.2}
    assert not diagnose_collapse(healthy).collapsed
    report = diagnose_collapse({"recon_std_ratio": 0.01, "psnr": 15.0, "psnr_gain": 0.1, "psnr_mean_image": 14.9,
                                "kl_global_floor_share": 1.0, "kl_global_raw": 0.001, "input_min": 0.0,
                                "input_max": 1.0})
    assert report.signals == ["gray_output", "no_better_than_mean_image", "dead_kl_global"]
    for text in ("recon_std_ratio = 0.010", "input range seen [0.00, 1.00]", "raise loss.recon_scale",
                 "lower loss.free_nats_global"):
        assert text in report.message
