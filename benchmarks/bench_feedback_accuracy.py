"""What the precision of the gated feedback does to accuracy: the bundle's training, same data, same number of steps,
same seeds, once per precision mode, each model scored on the validation split.

    python benchmarks/bench_feedback_accuracy.py --dataset acdc_h5 --dataset_dir DIR [--preset small --epochs 1
        --seeds 0 1 --modes fp32 bf16/split bf16/autocast fp32/no-feedback --jobs 2 --output runs/feedback_accuracy]

Modes are ``PRECISION/FEEDBACK_PRECISION``: ``PRECISION`` ``fp32`` (``--amp false``), ``bf16`` (``--amp true`` on CPU:
bfloat16 autocast) or ``fp16`` (``--amp true`` on CUDA: float16 autocast with the gradient scaler);
``FEEDBACK_PRECISION`` is ``MGRADUNet(feedback_precision=...)``, ``full`` where left out. ``fp32/no-feedback`` is the
control: plain float32 with ``feedback_scale`` 0, so the feedback passes add nothing; it says how much of the accuracy
the feedback carries at this budget at all. On CPU ``bf16/full`` computes bit for bit what ``fp32`` computes (every
convolution runs in float32), so it is not a separate row there.

Each run is ``python -m mgrad train`` in its own process (``--jobs`` at a time, the machine's threads shared among
them) with validation once, after the last epoch; its output folder keeps the model, ``history.json`` and the log.
``results.json`` in ``--output`` gains each run as it ends, so an interrupted benchmark resumes where it stopped. The
table gives, per mode, the validation mean Dice of each seed, their mean, and the training time of a run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine_summary  # noqa: E402

from mgrad.writers import write_json  # noqa: E402

DEFAULT_MODES = ("fp32", "bf16/split", "bf16/autocast", "fp32/no-feedback")


def mode_overrides(mode: str) -> list[str]:
    """The ``mgrad train`` arguments of one mode."""
    precision, _, feedback = mode.partition("/")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r} in mode {mode!r}; use fp32, bf16 or fp16")
    args = ["--amp", str(precision != "fp32")]
    if feedback == "no-feedback":
        return [*args, "--feedback_scale", "0.0"]
    if feedback not in ("", "full", "split", "autocast"):
        raise ValueError(f"unknown feedback precision {feedback!r} in mode {mode!r}")
    return [*args, "--feedback_precision", feedback or "full"]


def run_one(args: argparse.Namespace, mode: str, seed: int, threads: int) -> dict:
    """Train one (mode, seed) in a fresh process and return its validation Dice and time."""
    run_dir = Path(args.output) / "runs" / f"{mode.replace('/', '_')}_seed{seed}"
    command = [
        sys.executable, "-m", "mgrad", "train",
        "--dataset", args.dataset, "--dataset_dir", args.dataset_dir, "--preset", args.preset,
        "--epochs", str(args.epochs), "--val_interval", str(args.epochs), "--seed", str(seed),
        "--device", args.device, "--model_dir", str(run_dir / "models"), "--log_dir", str(run_dir / "logs"),
        *mode_overrides(mode),
    ]  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(run_dir / "train.log", "w") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if finished.returncode != 0:
        log_path = run_dir / "train.log"
        raise RuntimeError(f"training {mode} seed {seed} failed (exit {finished.returncode}); see {log_path}")
    history = json.loads((run_dir / "logs" / "history.json").read_text())
    finish = "MGRADTrainer - INFO - Engine run finished. Time taken: "  # the trainer's own time, validation included
    taken = [line.split(finish)[1] for line in (run_dir / "train.log").read_text().splitlines() if finish in line]
    h, m, s = (float(part) for part in taken[-1].split(":"))
    return {
        "mode": mode,
        "seed": seed,
        "val_mean_dice": history["val_mean_dice"][-1],
        "final_loss": history["loss"][-1],
        "iterations": history["iteration"][-1],
        "train_seconds": 3600 * h + 60 * m + s,
    }


def table(results: list[dict], modes: list[str]) -> str:
    """Markdown: per mode the seeds' validation mean Dice, their mean, the mean difference from the first mode at
    the same seeds (the same initial weights and data order: a paired comparison) and the mean training time."""
    seeds = sorted({r["seed"] for r in results})
    dice = {(r["mode"], r["seed"]): r["val_mean_dice"] for r in results}
    head = "| mode | " + " | ".join(f"seed {s}" for s in seeds) + f" | mean | vs {modes[0]}, paired | train s/run |"
    lines = [head, "|" + "---|" * (len(seeds) + 4)]
    for mode in modes:
        rows = [r for r in results if r["mode"] == mode]
        if not rows:
            continue
        cells = [f"{dice[mode, s]:.4f}" if (mode, s) in dice else "" for s in seeds]
        mean = statistics.mean(r["val_mean_dice"] for r in rows)
        paired = [dice[mode, s] - dice[modes[0], s] for s in seeds if (mode, s) in dice and (modes[0], s) in dice]
        delta = f"{statistics.mean(paired):+.4f}" if paired and mode != modes[0] else ""
        seconds = statistics.mean(r["train_seconds"] for r in rows)
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {mean:.4f} | {delta} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="acdc_h5")
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (CPU: they share the cores)")
    parser.add_argument("--output", default="runs/feedback_accuracy")
    args = parser.parse_args()
    for mode in args.modes:
        mode_overrides(mode)  # an unknown mode fails before anything runs

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results_path = output / "results.json"
    results = json.loads(results_path.read_text())["runs"] if results_path.exists() else []
    done = {(r["mode"], r["seed"]) for r in results}
    todo = [(m, s) for m in args.modes for s in args.seeds if (m, s) not in done]
    machine = machine_summary()
    print(machine, flush=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.device == "cpu" else 1
    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(lambda job: run_one(args, *job, threads), todo):
            results.append(result)
            print(f"{result['mode']:<18} seed {result['seed']}: val mean Dice {result['val_mean_dice']:.4f} "
                  f"({result['train_seconds']:.0f} s)", flush=True)  # fmt: skip
            write_json(results_path, {"machine": machine, "settings": vars(args), "runs": results}, indent=1)
    print(table(results, args.modes))


if __name__ == "__main__":
    main()
