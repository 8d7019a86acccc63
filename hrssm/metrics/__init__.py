"""Project metrics as local `evaluate` modules (loaded by path, so they work offline)."""

from pathlib import Path

GROUP_ACCURACY_PATH = str(Path(__file__).with_name("group_accuracy.py"))


def load_group_accuracy():
    """`evaluate.load` of the group-accuracy metric (average, per-group, worst-group, adjusted average)."""
    import evaluate

    return evaluate.load(GROUP_ACCURACY_PATH)
