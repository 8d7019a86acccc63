import math

import numpy as np
import pytest

from hrssm.evaluation import balanced_subset, group_accuracies, linear_probe


def test_group_accuracies_by_hand_with_an_empty_group_and_a_group_of_one():
    y = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, 1, 0, 1, 0])
    groups = np.array([0, 0, 1, 3, 3])  # group 2 empty, group 1 has one image
    train_groups = np.array([0] * 6 + [1] * 2 + [2] * 1 + [3] * 2)
    r = group_accuracies(pred, y, groups, train_groups)
    assert r.group_counts == [2, 1, 0, 2]
    assert r.per_group[:2] == [0.5, 1.0] and math.isnan(r.per_group[2]) and r.per_group[3] == 0.5
    assert r.average == 3 / 5 and r.worst_group == 0.5
    assert math.isclose(r.adjusted_average, (6 * 0.5 + 2 * 1.0 + 2 * 0.5) / 10)  # empty group left out


def _data(n, informative, seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    place = rng.integers(0, 2, n)
    feats = rng.normal(size=(n, 8))
    if informative:
        feats[:, 0] += 4 * (2 * label - 1)
    return {"features": feats, "label": label, "place": place, "group": 2 * label + place}


def test_probe_reads_a_feature_that_encodes_the_label_and_not_noise():
    perfect = linear_probe(_data(400, True, 0), _data(400, True, 1))
    assert perfect.average == 1.0 and perfect.worst_group == 1.0
    noise = linear_probe(_data(400, False, 0), _data(2000, False, 1))
    assert abs(noise.average - 0.5) < 0.06


def test_balanced_subset_has_equal_groups():
    d = _data(500, True, 0)
    b = balanced_subset(d)
    counts = np.bincount(b["group"], minlength=4)
    assert len(set(counts.tolist())) == 1 and counts[0] == np.bincount(d["group"]).min()


def test_the_evaluate_module_loads_offline_by_path_and_matches_by_hand():
    from hrssm.metrics import load_group_accuracy

    metric = load_group_accuracy()
    out = metric.compute(predictions=[0, 1, 0, 1, 0], references=[0, 0, 0, 1, 1], groups=[0, 0, 1, 3, 3],
                         train_groups=[0] * 6 + [1] * 2 + [2] * 1 + [3] * 2)
    assert out["group_counts"] == [2, 1, 0, 2] and out["accuracy"] == 3 / 5
    assert out["group_accuracy"][:2] == [0.5, 1.0] and math.isnan(out["group_accuracy"][2])
    assert out["worst_group_accuracy"] == 0.5
    assert math.isclose(out["adjusted_accuracy"], (6 * 0.5 + 2 * 1.0 + 2 * 0.5) / 10)
    with pytest.raises(ValueError, match=r"groups must be in \[0, 4\)"):
        metric.compute(predictions=[0], references=[0], groups=[7])
