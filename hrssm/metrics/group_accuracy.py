"""Group accuracy for spurious-correlation benchmarks (e.g. Waterbirds), as a Hugging Face `evaluate` metric.

Load it by path, offline:  evaluate.load(hrssm.metrics.GROUP_ACCURACY_PATH)  (or hrssm.metrics.load_group_accuracy()).
It needs only numpy, datasets and evaluate, so the file can be copied and reused on its own.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Average accuracy, accuracy of each group, worst-group accuracy (over non-empty groups), and the
adjusted average: per-group accuracies weighted by the group proportions of the training set (Sagawa et al. 2020)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    groups (list of int): group of each example, in [0, num_groups).
    train_groups (list of int, optional): groups of the training examples, for the adjusted average (default: the
        evaluated examples' own proportions).
    num_groups (int, optional): number of groups (default 4).
Returns:
    accuracy, worst_group_accuracy, adjusted_accuracy: floats (nan when nothing to average);
    group_accuracy: list of floats (nan for an empty group); group_counts: list of ints.
Example:
    >>> metric = evaluate.load("hrssm/metrics/group_accuracy.py")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], groups=[0, 3, 1])["worst_group_accuracy"]
    0.0
"""

_CITATION = """@inproceedings{sagawa2020distributionally,
  title={Distributionally Robust Neural Networks for Group Shifts},
  author={Sagawa, Shiori and Koh, Pang Wei and Hashimoto, Tatsunori B and Liang, Percy},
  booktitle={ICLR}, year={2020}}"""


def group_metrics(predictions, references, groups, train_groups=None, num_groups=4):
    """The metric's computation, usable without `evaluate`."""
    pred, ref, grp = (np.asarray(a, dtype=np.int64) for a in (predictions, references, groups))
    if not len(pred) == len(ref) == len(grp):
        raise ValueError(f"predictions, references and groups differ in length: {len(pred)}, {len(ref)}, {len(grp)}")
    if len(grp) and (grp.min() < 0 or grp.max() >= num_groups):
        raise ValueError(f"groups must be in [0, {num_groups}), found {sorted(set(grp.tolist()))}")
    correct = pred == ref
    counts = [int((grp == g).sum()) for g in range(num_groups)]
    per_group = [float(correct[grp == g].mean()) if counts[g] else float("nan") for g in range(num_groups)]
    present = [g for g in range(num_groups) if counts[g]]
    weights = np.bincount(np.asarray(grp if train_groups is None else train_groups, dtype=np.int64),
                          minlength=num_groups)[:num_groups].astype(float)
    w = weights[present] / weights[present].sum() if present and weights[present].sum() > 0 else None
    return {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "worst_group_accuracy": min(per_group[g] for g in present) if present else float("nan"),
        "adjusted_accuracy": float(sum(wi * per_group[g] for wi, g in zip(w, present))) if w is not None
        else float("nan"),
        "group_accuracy": per_group,
        "group_counts": counts,
    }


class GroupAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64"),
                                        "groups": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, groups, train_groups=None, num_groups=4):
        return group_metrics(predictions, references, groups, train_groups, num_groups)
