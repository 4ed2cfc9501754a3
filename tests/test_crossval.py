"""The cross-validation table over folds."""

import json
import math

import numpy as np

from mgrad import metrics
from mgrad.crossval import cross_validation, format_cross_validation
from mgrad.metrics.report import _json_safe


def fold_summary(seed: int, n: int, names: tuple[str, str] = ("a", "b")) -> dict:
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n):
        label = np.zeros((16, 16, 4), np.int64)
        label[2:10, 2:10] = 1
        label[10:14, 8:14] = 2
        pred = label.copy()
        pred[rng.integers(0, 16, 20), rng.integers(0, 16, 20), rng.integers(0, 4, 20)] = 1
        cases[f"case{seed}_{i}"] = metrics.case_metrics(pred, label, 3, (1.0, 1.0, 2.0))
    # through JSON as the reports are read back (NaN written as null)
    return json.loads(json.dumps(_json_safe(metrics.summarize(cases, list(names)))))


def test_folds_and_pooled_cases():
    summaries = [fold_summary(0, 2), fold_summary(1, 3)]
    result = cross_validation(summaries)
    assert [f["num_cases"] for f in result["folds"]] == [2, 3]
    assert result["pooled"]["num_cases"] == 5
    for f, s in zip(result["folds"], summaries):
        assert math.isclose(f["mean_dice"], s["mean_dice"]) and math.isclose(
            f["dice"]["b"], s["per_class"]["b"]["dice"]
        )
    pooled_a = np.mean([c["a"]["dice"] for s in summaries for c in s["cases"].values()])
    assert math.isclose(result["pooled"]["per_class"]["a"]["dice"], pooled_a)
    text = format_cross_validation(result)
    assert text.splitlines()[0].split()[:4] == ["fold", "cases", "Dice", "%"]
    assert "all held-out cases pooled:" in text and "cases: 5" in text


def test_long_class_names_are_printed_whole_and_aligned():
    names = ("inferior_vena_cava", "b")
    lines = format_cross_validation(cross_validation([fold_summary(0, 2, names), fold_summary(1, 3, names)]))
    head, *folds = lines.splitlines()[:3]
    assert head.split()[-2:] == list(names)
    assert all(len(row) == len(head) for row in folds)  # each value under its class's name
