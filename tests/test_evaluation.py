import math

import numpy as np
import pytest

from hrssm.evaluation import (
    DFR_C_GRID,
    DFR_HALF_PROBE,
    DFR_PROBE,
    ERM_PROBE,
    KNN_PROBE,
    PLACE_PROBE,
    balanced_subset,
    dfr_half_probe,
    dfr_probe,
    floors_table,
    group_accuracies,
    knn_probe,
    split_halves,
    standard_probes,
    train_probe,
)


def linear_probe(train, test, target="label", C=1.0):
    from hrssm.evaluation import _score, fit_logistic

    return _score(fit_logistic(train["features"], train[target], C), test, target, train["group"])


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


def _weak(n, seed, spurious, strength=1.0):
    """The label weakly in feature 0 (N(+-strength, 1): Bayes accuracy Phi(strength) in every group), the place
    strongly in feature 1."""
    d = _data(n, False, seed, spurious)
    d["features"][:, 0] += strength * (2 * d["label"] - 1)
    return d


def _phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_probe_reads_a_feature_that_encodes_the_label_and_not_noise():
    perfect = linear_probe(_data(400, True, 0), _data(400, True, 1))
    assert perfect.average == 1.0 and perfect.worst_group == 1.0
    noise = linear_probe(_data(400, False, 0), _data(2000, False, 1))
    assert abs(noise.average - 0.5) < 0.06


def test_every_probe_is_perfect_on_perfect_features_and_chance_on_random_ones():
    train, val, test = (_data(600, True, 0, 0.95, 10), _data(300, True, 1, strength=10),
                        _data(1000, True, 2, strength=10))
    probes = standard_probes({"train": train, "validation": val, "test": test}, seeds=(0, 1))
    assert probes[PLACE_PROBE].average > 0.98  # the place: N(+-4, 1), Bayes accuracy 0.99997
    for name in (DFR_PROBE, DFR_HALF_PROBE, ERM_PROBE):
        r = probes[name]
        assert r.average == 1.0 and r.worst_group == 1.0 and r.adjusted_average == 1.0, name
    assert probes[KNN_PROBE].worst_group > 0.99  # six noise dimensions perturb a few neighbourhoods
    train, val, test = _data(600, False, 0, spurious=0.95), _data(300, False, 1), _data(3000, False, 2)
    probes = standard_probes({"train": train, "validation": val, "test": test}, seeds=(0, 1))
    for name in (DFR_PROBE, DFR_HALF_PROBE, ERM_PROBE, KNN_PROBE):
        assert abs(probes[name].average - 0.5) < 0.06 and probes[name].worst_group < 0.6, name


def test_reference_dfr_reaches_the_bayes_accuracy_of_a_planted_feature_where_the_train_probe_takes_the_shortcut():
    """Known answer: the label is N(+-1.5, 1) in feature 0 in every group (Bayes accuracy Phi(1.5) = 0.933), the
    place is strong in feature 1 and 95% correlated with the label in train. DFR (balanced validation refits)
    reaches the Bayes accuracy in its worst group; the probe fit on train leans on the place and fails."""
    train, val, test = _weak(3000, 0, 0.95, 1.5), _weak(1200, 1, 0.5, 1.5), _weak(8000, 2, 0.5, 1.5)
    dfr = dfr_probe(train, val, test, seeds=(0, 1, 2))
    erm = train_probe(train, val, test, grid=(1.0,))
    bayes = _phi(1.5)
    assert bayes - 0.04 < dfr.worst_group <= bayes + 0.02
    assert abs(dfr.average - bayes) < 0.02
    assert erm.worst_group < dfr.worst_group - 0.2


def test_reference_dfr_scales_with_train_statistics_and_averages_refits():
    train, val, test = _weak(2000, 0, 0.95), _weak(800, 1, 0.5), _weak(1000, 2, 0.5)
    train["features"] = train["features"] * 3 + 5  # train statistics differ from validation's
    r = dfr_probe(train, val, test, seeds=(0,), refits=4)
    scaler, lr = r.probe[0], r.probe[-1]
    np.testing.assert_allclose(scaler.mean_, train["features"].mean(0))
    assert getattr(lr, "l1_ratio", None) == 1.0 or lr.penalty == "l1"
    assert lr.solver == "liblinear" and r.C in DFR_C_GRID
    assert lr.coef_.shape == (1, 8)


def test_probes_are_identical_when_rerun_and_under_other_thread_counts():
    from threadpoolctl import threadpool_limits

    train, val, test = _weak(1500, 0, 0.95), _weak(600, 1, 0.5), _weak(1000, 2, 0.5)
    feats = {"train": train, "validation": val, "test": test}
    first = standard_probes(feats, seeds=(0, 1))
    with threadpool_limits(2):
        second = standard_probes(feats, seeds=(0, 1))
    for name in first:
        assert first[name].to_dict() == second[name].to_dict(), name


def test_probe_seeds_give_a_spread_and_wilds_keys():
    train, val, test = _weak(1500, 0, 0.95, 0.7), _weak(400, 1, 0.5, 0.7), _weak(1000, 2, 0.5, 0.7)
    r = dfr_probe(train, val, test, seeds=(0, 1, 2, 3))
    assert len(r.runs) == 4 and r.worst_group_std > 0
    d = r.to_dict()
    assert d["acc_wg"] == r.worst_group and d["seeds"] == 4 and d["acc_wg_std"] == r.worst_group_std
    for key in ("acc_avg", "adj_acc_avg", "acc_y:landbird_background:land", "acc_y:landbird_background:water",
                "acc_y:waterbird_background:land", "acc_y:waterbird_background:water"):
        assert key in d
    assert d["acc_y:waterbird_background:land"] == r.per_group[2]


def test_knn_probe_votes_among_balanced_validation_neighbours():
    train, val, test = _data(600, True, 0, 0.95), _data(400, True, 1), _data(1000, True, 2)
    r = knn_probe(train, val, test, seeds=(0,))
    assert r.worst_group > 0.95
    counts = np.bincount(val["group"], minlength=4)
    assert len(r.probe.y) == 4 * counts.min()  # the vote bank is group-balanced


def test_half_validation_dfr_still_beats_the_shortcut():
    train, val, test = _weak(3000, 0, 0.95), _weak(1200, 1, 0.5), _weak(4000, 2, 0.5)
    erm, dfr = train_probe(train, val, test, grid=(1.0,)), dfr_half_probe(val, test, train["group"])
    assert erm.worst_group < 0.6 < dfr.worst_group
    assert dfr.worst_group > erm.worst_group + 0.15


def test_floors_table_lists_every_feature_set():
    train, val, test = _weak(600, 0, 0.95), _weak(300, 1, 0.5), _weak(400, 2, 0.5)
    probes = standard_probes({"train": train, "validation": val, "test": test}, seeds=(0, 1))
    table = floors_table({"trained": probes, "random init": probes})
    assert table.count("\n") == 3 and "| random init |" in table and "±" in table


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
