"""The GPU check: the GPU benchmarks and a short ``mgrad reproduce acdc``, every figure in one JSON.

    python scripts/gpu_check.py --out DIR [--acdc-pack .device/acdc.pkl.xz --unpack .device/unpack_acdc.py]
        [--parts train_step reproduce inference feedback feedback_trained profile] [--train-seconds 90]
        [--budget 510] [--archive FILE.tar.gz]

Run by ``scripts/gpu_check.sh`` on a bare GPU machine (it installs the wheels first). Each part runs as its own
command with a time limit, its output in ``DIR/<part>.log``; ``DIR/gpu_check.json`` collects the machine, each
part's exit status, duration and results, and is rewritten after every part, so a part that fails or runs out of
time loses nothing of the others. All parts together stay within ``--budget`` seconds (510 by default, so that the
check with its installation takes at most 9 minutes): a part runs for at most its own limit or what is left, and
is recorded as ``"skipped"`` where less than 20 s is left. A part stopped at its limit is killed with the processes
it started. ``--archive FILE.tar.gz`` also packs the whole folder (the report, every log and profile) into one file,
rewritten after every part like the report: what a machine that returns only a few files should send back.

Parts, in the order they run (the issue's targets first, then the checks of the feedback's precision, then the profile,
so a slow machine loses the least of them): ``train_step`` (benchmarks/bench_train_step.py: plain float32 against the
bundle's CUDA settings, ``cl+fused``, with float16 autocast, with every block checkpointed for memory (about 0.4 of a
float32 pass's activation memory), and with selective checkpointing (the 3x3 convolutions' outputs kept: about half of
it, with less recomputed); the inexact modes' speed is in ``feedback``), ``compile`` (the bundle's settings with
regional compilation, run twice: cold and from Inductor's cache; its cold warm-up took over 340 s on an H200, so this
part needs a call of its own with ``--budget 560``; the iterations are logged as they end, and each graph's compilation,
as in ``inference_compile``), ``loss`` (benchmarks/bench_loss.py: the aggregated loss, fused against MONAI's
``DiceCELoss`` on each subset, batch 12, 9 classes), ``reproduce`` (the paper preset on the packed ACDC data for
``--train-seconds``, evaluated under both test protocols), ``inference`` (benchmarks/bench_inference.py: per-slice speed
at batch 12 and the label agreement with float32, plain, fast and fast with cuDNN's fused convolution and ReLU, on the
trained weights where ``reproduce`` ran first, else random ones), ``inference_compile`` (the same with the compiled fast
path too, its compilation timed as the warm-up), the end-to-end inference (after ``reproduce``: ``mgrad infer`` over
five copies of the test volumes, timed as a process and as the inference engine's run: volumes per second with and
without the start-up; then the same with each volume's inversion and writing inline instead of in a worker thread,
``infer_end_to_end_inline``), ``feedback`` (benchmarks/bench_feedback_precision.py: the feedback's error against float64
and the training step of every precision mode, paper widths, batch 12, 224x224, channels-last), ``feedback_trained``
(the feedback's error of each precision mode on the trained weights and real slices, against float64), ``profile``
(benchmarks/profile_step.py: where the time of a training iteration and of an inference call goes, by operator, kernel
and convolution, in ``DIR/profile/``). ``compile``, ``loss`` and ``inference_compile`` run only when named.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INFER_COPIES = 5
PARTS = (
    "train_step",
    "compile",
    "loss",
    "reproduce",
    "inference",
    "inference_compile",
    "feedback",
    "feedback_trained",
    "profile",
)
COMPILE_LOGS = {"TORCH_LOGS": "dynamo"}
"""The compiled parts' environment: Dynamo logs each graph's tracing and compilation with its time, so the log shows
where a warm-up's time goes, also when the part is stopped at its limit."""
DEFAULT_PARTS = ("train_step", "reproduce", "inference", "feedback", "feedback_trained", "profile")


class Budget:
    """The check's time: ``seconds`` from now. A part gets its own limit or what is left, whichever is less, and is
    skipped where less than ``MIN_PART_SECONDS`` is left."""

    MIN_PART_SECONDS = 20

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run(
    out: Path, name: str, command: list[str], limit: float, budget: Budget, env: dict[str, str] | None = None
) -> dict:
    """Run ``command`` (with ``env`` added to the environment) with its output in ``out/<name>.log`` for at most
    ``limit`` seconds and what ``budget`` has left; its exit status ("timeout" where it was stopped, "skipped" where
    the budget had no time for it) and seconds. A stopped command is killed with every process it started (the
    benchmarks run their configurations in processes of their own, which would otherwise hold the GPU for the parts
    that follow)."""
    if budget.left() < Budget.MIN_PART_SECONDS:
        return {"rc": "skipped", "seconds": 0.0, "reason": f"{budget.left():.0f} s of the check's budget left"}
    start, timeout = time.monotonic(), min(limit, budget.left())
    with open(out / f"{name}.log", "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            rc: int | str = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group ended on its own meanwhile
                pass
            process.wait()
            rc = "timeout"
    return {"rc": rc, "seconds": round(time.monotonic() - start, 1)}


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_archive(folder: Path, archive: Path) -> None:
    """``folder`` packed into the gzipped tar file ``archive`` under its own name, replaced in one step."""
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    partial.replace(archive)


def engine_seconds(log: Path) -> float | None:
    """The inference engine's own run time (loading, resampling, the network, inversion, writing; not the process's
    start-up), from ignite's "Engine run finished. Time taken: HH:MM:SS.mmm" line in ``log``."""
    found = re.findall(r"Engine run finished\. Time taken: (\d+):(\d+):([\d.]+)", log.read_text(errors="replace"))
    if not found:
        return None
    hours, minutes, seconds = found[-1]
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def split_acdc(root: Path) -> dict:
    """The packed ACDC data have a validation list only: its patients split in two, validation and test."""
    names = sorted(n.strip() for n in (root / "val.list").read_text().split() if n.strip())
    patients = sorted({n.split("_")[0] for n in names})
    test = set(patients[::2])
    (root / "test.list").write_text("\n".join(n for n in names if n.split("_")[0] in test) + "\n")
    (root / "val.list").write_text("\n".join(n for n in names if n.split("_")[0] not in test) + "\n")
    return {"validation_patients": sorted(set(patients) - test), "test_patients": sorted(test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--acdc-pack", default=".device/acdc.pkl.xz")
    parser.add_argument("--unpack", default=".device/unpack_acdc.py")
    parser.add_argument("--parts", nargs="+", default=list(DEFAULT_PARTS), choices=PARTS)
    parser.add_argument("--train-seconds", type=int, default=90)
    parser.add_argument(
        "--budget", type=float, default=510, help="seconds for all parts (default 510: the check in 9 minutes)"
    )
    parser.add_argument("--archive", type=Path, default=None, help="also pack the folder into this .tar.gz file")
    args = parser.parse_args()
    budget = Budget(args.budget)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    report: dict = {"budget_seconds": args.budget, "parts": {}}
    summary = subprocess.run(
        [py, "-c", "import sys; sys.path.insert(0, 'benchmarks'); from common import machine_summary; "
         "print(machine_summary())"], cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    report["machine"] = summary.stdout.strip() or summary.stderr.strip()[-500:]

    def record(name: str, result: dict) -> None:
        report["parts"][name] = result
        partial = out / "gpu_check.json.partial"  # replaced in one step: a killed run leaves the last whole report
        partial.write_text(json.dumps(report, indent=1))
        partial.replace(out / "gpu_check.json")
        if args.archive is not None:
            write_archive(out, args.archive.resolve())
        print(f"{name}: {result.get('rc')} in {result.get('seconds')} s", flush=True)

    def bench_part(name: str, command: list[str], limit: float, env: dict | None = None, **extra: object) -> None:
        """A benchmark writing ``out/<name>.json``, which the report takes in."""
        result = run(out, name, command + ["--json", str(out / f"{name}.json")], limit, budget, env)
        record(name, {**result, **extra, "result": read_json(out / f"{name}.json")})

    bench = ["--size", "224", "--batch", "12"]
    train_step = [py, "benchmarks/bench_train_step.py", *bench, "--steps", "5", "--configs"]
    if "train_step" in args.parts:
        configs = ["plain", "cl+fused", "amp+cl+fused", "cl+fused+ckpt", "cl+fused+rfbckpt", "cl+fused+selckpt"]
        bench_part("train_step", train_step + configs, 230)
    if "compile" in args.parts:
        bench_part("compile", train_step + ["plain", "cl+fused+compile"], 560, COMPILE_LOGS)
    if "loss" in args.parts:
        bench_part("loss", [py, "benchmarks/bench_loss.py", *bench, "--classes", "9"], 120)
    data, runs = Path("/tmp/acdc"), Path("/tmp/reproduce_acdc")
    if "reproduce" in args.parts:
        result = run(out, "unpack", [py, args.unpack, args.acdc_pack, str(data)], 120, budget)
        split = split_acdc(data) if result["rc"] == 0 else {}
        command = [py, "-m", "mgrad", "reproduce", "acdc", "--dataset_dir", str(data), "--output_dir", str(runs)]
        command += ["--time_budget", str(args.train_seconds), "--device", "cuda:0"]
        result = run(out, "reproduce", command, args.train_seconds + 240, budget)
        table = read_json(runs / "table.json")
        if (runs / "table.md").is_file():
            (out / "table.md").write_text((runs / "table.md").read_text())
        record("reproduce", {**result, "split": split, "result": table})
    weights = next(iter(sorted(runs.glob("**/model.pt"))), None)
    # the speed does not depend on the weights: trained ones (where reproduce ran) also give the label agreement
    inference = [py, "benchmarks/bench_inference.py", "--networks", "MGRADUNet", "--slices", "240", "--size", "224"]
    inference += ["--sw-batch-size", "12", "--fused"] + ([] if weights is None else ["--checkpoint", str(weights)])
    trained = {"weights": "random" if weights is None else "trained"}
    if "inference" in args.parts:
        bench_part("inference", inference, 150, **trained)
    if "inference_compile" in args.parts:
        bench_part("inference_compile", inference + ["--compile"], 360, COMPILE_LOGS, **trained)
    if weights is not None and "reproduce" in args.parts:
        volumes = data / "volumes_test"
        volumes.mkdir(exist_ok=True)
        for name in (data / "test.list").read_text().split():
            for copy in range(INFER_COPIES):  # enough volumes that the steady rate shows beside the start-up
                target = volumes / f"{name}_{copy}.h5"
                if not target.exists():
                    os.symlink(data / "volumes" / f"{name}.h5", target)
        command = [py, "-m", "mgrad", "infer", "--input", str(volumes), "--output_dir", "/tmp/preds"]
        command += ["--ckpt_path", str(weights), "--dataset", "acdc_h5", "--preset", "paper", "--device", "cuda:0"]
        count = len(list(volumes.glob("*.h5")))
        # the default (each volume's inversion and writing in a worker thread) and the same run with them inline
        for name, background in (("infer_end_to_end", "true"), ("infer_end_to_end_inline", "false")):
            result = run(out, name, command + ["--background_postprocessing", background], 180, budget)
            engine = engine_seconds(out / f"{name}.log")
            record(
                name,
                {
                    **result,
                    "volumes": count,
                    "volumes_per_second": count / result["seconds"] if result["seconds"] else None,
                    "engine_seconds": engine,
                    "engine_volumes_per_second": count / engine if engine else None,
                },
            )
    feedback = [py, "benchmarks/bench_feedback_precision.py", "--device", "cuda", *bench]
    if "feedback" in args.parts:
        bench_part("feedback", feedback + ["--preset", "paper", "--steps", "3", "--channels-last"], 200)
    if "feedback_trained" in args.parts and weights is not None:
        images = ["--checkpoint", str(weights), "--images", str(data / "slices")]
        bench_part("feedback_trained", feedback + ["--no-timing", *images], 120)
    if "profile" in args.parts:
        command = [py, "benchmarks/profile_step.py", "--out", str(out / "profile"), *bench, "--preset", "paper"]
        result = run(out, "profile", command, 120, budget)
        record("profile", {**result, "result": read_json(out / "profile" / "profile.json")})


if __name__ == "__main__":
    main()
