"""``python -m mgrad reproduce acdc|synapse --dataset_dir DIR``: one command per table of the paper.

Trains MGRAD-UNet with the bundle's paper preset (and optionally baselines through the identical pipeline and
budget), selects the model on the validation split, evaluates the test split under both test protocols (the
published one and MONAI's) and writes a table with the paper's row beside the measured ones. Every step is
resumable: a killed run continues training from its checkpoint, and finished steps are not repeated.
"""

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mgrad.bundle import config_names, default_bundle_root, merged_config, run_config, split_overrides
from mgrad.data.datasets import get_datalist
from mgrad.data.errors import DataError
from mgrad.handlers import completed_epochs
from mgrad.hardware import machine_summary
from mgrad.paper_table import PAPER_ROWS, format_markdown, measured_row
from mgrad.writers import atomic_path, read_json, write_json

__all__ = ["reproduce", "detect_layout", "BASELINES"]

TABLES = {"synapse": ("synapse", "synapse_transunet"), "acdc": ("acdc", "acdc_h5")}
TABLE_TITLES = {"synapse": "Synapse multi-organ CT (the paper's Table 1)", "acdc": "ACDC cardiac MRI (Table 2)"}
# baseline name -> (row title, bundle configs layered on the training and inference configs)
BASELINES: dict[str, tuple[str, list[str]]] = {"basicunet": ("BasicUNet (MONAI)", ["baseline_basicunet"])}
PROTOCOLS = ("transunet", "default")
EVAL_CONFIGS = ["inference", "evaluate"]
# settings that change what is trained: a rerun into the same output_dir must keep them
_RUN_KEYS = ("table", "dataset", "dataset_dir", "preset", "epochs", "time_budget", "seed", "baselines", "overrides")


def detect_layout(table: str, dataset_dir: str) -> str:
    """The data layer's dataset name for ``table``'s data in ``dataset_dir``: ``synapse_transunet`` (TransUNet's
    ``train_npz``/``test_vol_h5``) or ``synapse`` (raw BTCV ``img``/``label``); ``acdc_h5`` (SSL4MIS ``slices``/
    ``volumes`` with list files) or ``acdc`` (NIfTI ``patientNNN_frameFF``)."""
    if table not in TABLES:
        raise ValueError(f"unknown table '{table}'; choose one of {sorted(TABLES)}")
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if table == "synapse":
        return "synapse_transunet" if (root / "train_npz").is_dir() or (root / "test_vol_h5").is_dir() else "synapse"
    if (root / "volumes").is_dir() or (root / "slices").is_dir():
        return "acdc_h5"
    return "acdc"


def _check_splits(dataset: str, dataset_dir: str, synapse: bool) -> dict[str, int]:
    """The number of items per split, failing before any training where a split is missing or empty, or names a
    file that is not there (the test split is read only after hours of training)."""
    splits = ("training", "test") if synapse else ("training", "validation", "test")
    counts = {}
    for split in splits:
        items = get_datalist(dataset, dataset_dir, split)
        missing = sorted({str(f) for item in items for f in (item["image"], item["label"]) if not Path(f).exists()})
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DataError(f"{dataset_dir}: the '{split}' split names {len(missing)} missing file(s): {shown}")
        counts[split] = len(items)
    return counts


class _Row:
    """One model's folder under the output: ``models/``, ``logs/``, ``timing.json``, ``test_<protocol>/``; and the
    settings of its training and of its evaluation, each run given the ``settings`` that name its config ids."""

    def __init__(
        self, root: Path, name: str, title: str, configs: list[str], bundle_root: Path, settings: dict[str, Any]
    ) -> None:
        self.dir, self.name, self.title, self.configs = root / name, name, title, configs
        self.models, self.logs, self.timing_file = self.dir / "models", self.dir / "logs", self.dir / "timing.json"
        runs = [merged_config(["train", *configs], bundle_root), merged_config(EVAL_CONFIGS + configs, bundle_root)]
        self.train_settings, self.eval_settings = split_overrides(settings, runs)

    def timing(self) -> dict[str, Any]:
        timing = read_json(self.timing_file, DataError, missing=None)
        return timing or {"train_seconds": 0.0, "train_done": False, "eval_seconds": {}}

    def spent(self) -> float:
        """Training seconds of finished attempts plus, for a killed one, the time up to its last checkpoint."""
        timing = self.timing()
        started, checkpoint = timing.get("attempt_start"), self.models / "checkpoint.pt"
        extra = max(0.0, checkpoint.stat().st_mtime - started) if started and checkpoint.is_file() else 0.0
        return timing["train_seconds"] + extra

    def epochs(self) -> int | float | None:
        """The epochs trained, with the fraction of the last where a time budget stopped it inside one."""
        history = read_json(self.logs / "history.json", DataError, missing=None)
        return completed_epochs(history) if history else None


def _train(row: _Row, budget: float | None, bundle_root: Path) -> None:
    timing = row.timing()
    if timing["train_done"]:
        return
    spent = row.spent()
    remaining = None if budget is None else budget - spent
    if remaining is not None and remaining <= 0 and (row.models / "model.pt").is_file():
        write_json(row.timing_file, {**timing, "train_seconds": spent, "train_done": True, "attempt_start": None})
        return
    write_json(row.timing_file, {**timing, "train_seconds": spent, "attempt_start": time.time()})
    start = time.monotonic()
    run_config(
        ["train", *row.configs],
        bundle_root,
        ckpt_dir=str(row.models),
        log_dir=str(row.logs),
        resume=True,
        time_budget=None if remaining is None else max(remaining, 1.0),
        **row.train_settings,
    )
    timing = {**row.timing(), "train_seconds": spent + time.monotonic() - start, "train_done": True}
    write_json(row.timing_file, {**timing, "attempt_start": None})


def _evaluate(row: _Row, protocol: str, bundle_root: Path) -> dict[str, Any]:
    out = row.dir / f"test_{protocol}"
    summary = read_json(out / "metrics.json", DataError, missing=None)
    if summary is not None and not summary["errors"]:
        return summary
    start = time.monotonic()
    run_config(
        EVAL_CONFIGS + row.configs,
        bundle_root,
        split="test",
        protocol=protocol,
        ckpt_path=str(row.models / "model.pt"),
        output_dir=str(out),
        **row.eval_settings,
    )
    timing = row.timing()
    timing["eval_seconds"][protocol] = time.monotonic() - start
    write_json(row.timing_file, timing)
    summary = json.loads((out / "metrics.json").read_text())
    if summary["errors"]:
        failed = "; ".join(summary["errors"].values())
        raise RuntimeError(f"{len(summary['errors'])} test case(s) failed under the {protocol} protocol: {failed}")
    return summary


def reproduce(
    table: str,
    dataset_dir: str,
    output_dir: str | None = None,
    time_budget: float | None = None,
    device: str | None = None,
    epochs: int | None = None,
    baselines: str | Sequence[str] = (),
    preset: str = "paper",
    small: bool = False,
    dataset: str | None = None,
    seed: int = 0,
    bundle_root: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Reproduce the paper's Table 1 (``synapse``) or Table 2 (``acdc``) on the data in ``dataset_dir``.

    For MGRAD-UNet and each of ``baselines`` (``basicunet``: MONAI's BasicUNet, through the identical pipeline and
    budget): train with the bundle's ``preset`` (``paper``: the released protocol; ``small`` or ``small=True``: the
    CPU-sized preset) for ``epochs`` (the preset's default: 300 for ``paper``) or until ``time_budget`` seconds of
    training per model are spent, keep the model with the best validation mean Dice (Synapse has no validation
    split in TransUNet's protocol: there the last epoch's weights are kept, the test set never selects), evaluate
    it on the test split under the published protocol and MONAI's, and write ``table.md`` and ``table.json`` to
    ``output_dir`` (default ``runs/reproduce_<table>``). Run it again after a kill with the same arguments: training
    resumes from its checkpoint (within what is left of the budget) and finished steps are skipped.

    Args:
        table: ``synapse`` or ``acdc``.
        dataset_dir: the data, in any layout the data layer reads (raw BTCV, TransUNet npz/h5; ACDC NIfTI, SSL4MIS
            h5 with ``train.list``, ``val.list`` and ``test.list``); ``dataset`` names the layout where detection
            (:func:`detect_layout`) is not wanted.
        device: e.g. ``cpu``, ``cuda:0`` (default: the first GPU if any).
        overrides: further bundle ids for training and evaluation (e.g. ``size``, ``optimizer_name``, ``amp``).

    Returns:
        ``{"markdown": str, "rows": [...], ...}``: the table (paper row first, then one row per model and test
        protocol, Dice in percent) and the run's settings, hardware and split sizes, as written to ``table.json``.

    Example:
        >>> result = reproduce("acdc", "data/ACDC", time_budget=3600, baselines="basicunet")  # doctest: +SKIP
    """
    dataset = dataset or detect_layout(table, dataset_dir)
    if dataset not in TABLES.get(table, ()):
        raise ValueError(f"dataset '{dataset}' does not belong to table '{table}'; use one of {TABLES[table]}")
    names = config_names(baselines) if baselines else []
    unknown = [b for b in names if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(BASELINES)}")
    preset = "small" if small else preset
    synapse = table == "synapse"
    root = Path(bundle_root) if bundle_root else default_bundle_root()
    out = Path(output_dir or f"runs/reproduce_{table}")
    settings = {"dataset": dataset, "dataset_dir": dataset_dir, "preset": preset, "seed": seed, **overrides}
    if device is not None:
        settings["device"] = device
    if epochs is not None:
        settings["epochs"] = epochs
    if synapse:  # no validation split: validate only once training ends, so that model.pt holds the last weights
        settings["val_interval"] = 10**9
    # an option that no config reads fails here, before anything is written or trained
    models = [_Row(out, "mgrad_unet", "MGRAD-UNet", [], root, settings)]
    models += [_Row(out, name, BASELINES[name][0], BASELINES[name][1], root, settings) for name in names]
    counts = _check_splits(dataset, dataset_dir, synapse)
    run = {"table": table, "dataset": dataset, "dataset_dir": str(Path(dataset_dir).resolve()), "preset": preset,
           "epochs": epochs, "time_budget": time_budget, "seed": seed, "baselines": names,
           "overrides": overrides}  # fmt: skip
    saved, wanted = read_json(out / "run.json", DataError, missing=None), json.loads(json.dumps(run))
    # a setting the saved run did not record (a run.json of an earlier version) is not held against it
    changed = [
        f"{k} {saved[k]!r} there, {wanted[k]!r} now" for k in _RUN_KEYS if k in (saved or {}) and saved[k] != wanted[k]
    ]
    if changed:
        raise ValueError(
            f"{out} holds a run with other settings ({out / 'run.json'}: {'; '.join(changed)}); "
            "choose another --output_dir"
        )
    write_json(out / "run.json", run)

    hardware = machine_summary(device)
    rows = [dict(PAPER_ROWS[table])]
    class_names: list[str] = list(rows[0]["dice"])
    for row in models:
        _train(row, time_budget, root)
        for protocol in PROTOCOLS:
            summary = _evaluate(row, protocol, root)
            class_names = summary["class_names"]
            timing = row.timing()
            rows.append(
                measured_row(
                    row.title,
                    summary,
                    epochs=row.epochs(),
                    train_seconds=round(timing["train_seconds"], 1),
                    eval_seconds=round(timing["eval_seconds"].get(protocol, 0.0), 1),
                    hardware=hardware,
                    selection="last epoch" if synapse else "best validation mean Dice",
                )
            )
    selection = (
        "the last epoch's weights (TransUNet's Synapse split has no validation set; the test set never selects)"
        if synapse
        else f"the epoch with the best mean Dice on the validation split ({counts['validation']} volumes)"
    )
    notes = [
        f"Measured: {dataset} data in {dataset_dir}, {counts['training']} training items, {counts['test']} test "
        f"volumes; preset {preset}"
        + (f", {epochs} epochs" if epochs else "")
        + (f", budget {time_budget:.0f} s of training per model" if time_budget else "")
        + f"; {hardware}.",
        f"Model selection, measured rows: {selection}. Paper rows: the released trainers score the test set after "
        "every epoch and keep the best, a maximum over about 300 test evaluations (optimistic).",
        "Published protocol: each slice zoomed to the network's input size with a cubic spline, argmax of P1 + P2 in "
        "float32, label map zoomed back with nearest neighbour; Dice and HD95 per class and volume in voxels, a "
        "class absent from the ground truth but predicted scores Dice 1 / HD95 0, absent from the prediction 0 / 0.",
        "MONAI protocol: the bundle's default inference (whole-volume in-plane resize, Invertd to the original "
        "geometry); HD95 in mm (in voxels for files that carry no spacing, such as h5); classes absent from a case "
        "are skipped in the means.",
    ]
    markdown = format_markdown(TABLE_TITLES[table], class_names, rows, notes)
    result = {**run, "hardware": hardware, "splits": counts, "rows": rows,
              "notes": notes, "markdown": markdown}  # fmt: skip
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown)
    write_json(out / "table.json", result)
    return result
