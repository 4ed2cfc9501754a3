"""The cross-validation table: each fold's scores on its held-out patients, and all held-out cases pooled."""

from collections.abc import Mapping, Sequence
from typing import Any

from mgrad import metrics

__all__ = ["cross_validation", "format_cross_validation"]


def cross_validation(fold_summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine the evaluation summaries of the folds (each scored on its own held-out cases).

    Args:
        fold_summaries: one :func:`mgrad.metrics.summarize` result (``metrics.json``) per fold, in fold order.

    Returns:
        ``{"folds": [{"fold", "num_cases", "mean_dice", "mean_hd95", "dice": {class: value}}], "pooled": summary}``
        where ``pooled`` summarises every held-out case of every fold together (each case is held out once).

    Example:
        >>> summaries = [json.load(open(f"eval/fold{k}/metrics.json")) for k in range(5)]  # doctest: +SKIP
        >>> print(format_cross_validation(cross_validation(summaries)))  # doctest: +SKIP
    """
    if not fold_summaries:
        raise ValueError("no fold to combine")
    names = list(fold_summaries[0]["class_names"])
    folds, cases, errors = [], {}, {}
    for k, summary in enumerate(fold_summaries):
        if list(summary["class_names"]) != names:
            raise ValueError(f"fold {k} has classes {summary['class_names']}, fold 0 has {names}")
        folds.append(
            {
                "fold": k,
                "num_cases": summary["num_cases"],
                "mean_dice": _value(summary["mean"]["dice"]),
                "mean_hd95": _value(summary["mean"]["hd95"]),
                "dice": {name: _value(summary["per_class"][name]["dice"]) for name in names},
            }
        )
        for case, result in summary["cases"].items():
            cases[f"fold{k}/{case}"] = {
                c: {m: _value(v) for m, v in result[name].items()} for c, name in enumerate(names, 1) if name in result
            }
        errors.update({f"fold{k}/{case}": message for case, message in summary.get("errors", {}).items()})
    first = fold_summaries[0]
    pooled = metrics.summarize(cases, names, first["protocol"], errors, metrics.distance_unit(first))
    return {"folds": folds, "pooled": pooled}


def _value(v: Any) -> Any:
    """JSON null (a NaN written by the report) back to NaN."""
    return float("nan") if v is None else v


def format_cross_validation(result: Mapping[str, Any]) -> str:
    """One line per fold (cases, mean Dice %, mean HD95, Dice % per class), then the pooled table."""
    names = result["pooled"]["class_names"]
    widths = {n: max(10, len(n)) for n in names}  # a column as wide as its class's name
    head = f"{'fold':>6} {'cases':>5} {'Dice %':>7} {'HD95':>7} " + " ".join(f"{n:>{widths[n]}}" for n in names)
    lines = [head]
    for f in result["folds"]:
        per_class = " ".join(f"{100 * f['dice'][n]:>{widths[n]}.2f}" for n in names)
        lines.append(
            f"{f['fold']:>6} {f['num_cases']:>5} {100 * f['mean_dice']:>7.2f} {f['mean_hd95']:>7.2f} {per_class}"
        )
    return "\n".join(lines + ["all held-out cases pooled:", metrics.format_table(result["pooled"])])
