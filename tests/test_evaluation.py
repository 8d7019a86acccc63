import math

import numpy as np
import pytest

from hrssm.evaluation import balanced_subset, dfr_probe, group_accuracies, linear_probe, split_halves, train_probe


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


def _data(n, informative, seed, spurious=0.5, strength=4.0):
    """label, place with P(place == label) = spurious (0.5: independent); feature 0 encodes the label when
    `informative`, feature 1 always encodes the place."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    place = np.where(rng.random(n) < spurious, label, 1 - label)
    feats = rng.normal(size=(n, 8))
    if informative:
        feats[:, 0] += strength * (2 * label - 1)
    feats[:, 1] += 4 * (2 * place - 1)
    return {"features": feats, "label": label, "place": place, "group": 2 * label + place}


def test_probe_reads_a_feature_that_encodes_the_label_and_not_noise():
    perfect = linear_probe(_data(400, True, 0), _data(400, True, 1))
    assert perfect.average == 1.0 and perfect.worst_group == 1.0
    noise = linear_probe(_data(400, False, 0), _data(2000, False, 1))
    assert abs(noise.average - 0.5) < 0.06


def test_selected_probes_are_perfect_on_perfect_features_and_chance_on_random_ones():
    train, val, test = (_data(600, True, 0, 0.95, 10), _data(300, True, 1, strength=10),
                        _data(1000, True, 2, strength=10))
    for r in (train_probe(train, val, test), dfr_probe(val, test, train["group"])):
        assert r.average == 1.0 and r.worst_group == 1.0 and r.adjusted_average == 1.0
        assert r.C is not None and r.selection_worst_group == 1.0
    train, val, test = _data(600, False, 0, spurious=0.95), _data(300, False, 1), _data(3000, False, 2)
    for r in (train_probe(train, val, test), dfr_probe(val, test, train["group"])):
        assert abs(r.average - 0.5) < 0.06 and r.worst_group < 0.6  # test: label independent of place


def test_train_probe_takes_the_shortcut_and_dfr_does_not():
    """Label weakly encoded, place strongly, 95% correlated in train: the train-fit probe leans on the place (bad
    worst group); DFR refits on group-balanced validation and recovers it."""
    def weak(n, seed, spurious):
        d = _data(n, False, seed, spurious)
        d["features"][:, 0] += 1.0 * (2 * d["label"] - 1)
        return d

    train, val, test = weak(3000, 0, 0.95), weak(1200, 1, 0.5), weak(4000, 2, 0.5)
    erm, dfr = train_probe(train, val, test, grid=(1.0,)), dfr_probe(val, test, train["group"])
    assert erm.worst_group < 0.6 < dfr.worst_group
    assert dfr.worst_group > erm.worst_group + 0.15


def test_split_halves_are_disjoint_and_stratified():
    d = _data(501, True, 0)
    d["img_id"] = np.arange(501)
    a, b = split_halves(d, seed=3)
    assert not set(a["img_id"]) & set(b["img_id"]) and len(a["img_id"]) + len(b["img_id"]) == 501
    for g in range(4):
        assert abs(int((a["group"] == g).sum()) - int((b["group"] == g).sum())) <= 1


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
