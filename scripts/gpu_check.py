"""The GPU check: the GPU benchmarks and a short ``mgrad reproduce acdc``, every figure in one JSON.

    python scripts/gpu_check.py --out DIR [--acdc-pack .device/acdc.pkl.xz --unpack .device/unpack_acdc.py]
        [--parts feedback train_step reproduce feedback_trained inference profile] [--train-seconds 90]

Run by ``scripts/gpu_check.sh`` on a bare GPU machine (it installs the wheels first). Each part runs as its own
command with a time limit, its output in ``DIR/<part>.log``; ``DIR/gpu_check.json`` collects the machine, each
part's exit status, duration and results, and is rewritten after every part, so a part that fails or runs out of
time loses nothing of the others.

Parts: ``feedback`` (benchmarks/bench_feedback_precision.py: the feedback's error against float64 and the training
step of every precision mode, paper widths, batch 12, 224x224, channels-last), ``train_step``
(benchmarks/bench_train_step.py: plain float32 against the bundle's CUDA settings, ``cl+fused``, with float16
autocast, and with every block checkpointed for memory (the receptive field blocks alone keep about 0.6 of a float32
pass's activation memory, all blocks about 0.4); the inexact modes' speed is in ``feedback``), ``compile`` (the
bundle's settings and float16 with regional compilation, each compiled configuration run twice: cold and from
Inductor's cache), ``loss`` (benchmarks/bench_loss.py: the aggregated loss, fused against MONAI's ``DiceCELoss``
through ``vmap``, batch 12, 9 classes), ``inference`` (benchmarks/bench_inference.py: per-slice speed at batch 12
and the label agreement with float32, on the trained weights where ``reproduce`` ran first, else random ones),
``inference_compile`` (the same with the compiled fast path too, its compilation timed as the warm-up),
``reproduce`` (the paper preset on the packed ACDC data for ``--train-seconds``, evaluated under both test
protocols), ``feedback_trained`` (the feedback's error of each precision mode on those trained weights and real
slices, against float64), the end-to-end inference (after ``reproduce``: ``mgrad infer`` over five copies of the
test volumes, timed as a process and as the inference engine's run: volumes per second with and without the
start-up), ``profile`` (benchmarks/profile_step.py: where the time of a training iteration and of an inference call
goes, by operator, kernel and convolution, in ``DIR/profile/``). The parts run in the order feedback, train_step,
compile, loss, reproduce, feedback_trained, inference, inference_compile, end-to-end inference, profile.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INFER_COPIES = 5


def run(out: Path, name: str, command: list[str], timeout: int) -> dict:
    """Run ``command`` with its output in ``out/<name>.log``; its exit status and seconds."""
    start = time.monotonic()
    with open(out / f"{name}.log", "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        try:
            rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"rc": rc, "seconds": round(time.monotonic() - start, 1)}


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["feedback", "train_step", "reproduce", "feedback_trained", "inference", "profile"],
    )
    parser.add_argument("--train-seconds", type=int, default=90)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    report: dict = {"parts": {}}
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
        print(f"{name}: {result.get('rc')} in {result.get('seconds')} s", flush=True)

    bench = ["--size", "224", "--batch", "12"]
    if "feedback" in args.parts:
        command = [py, "benchmarks/bench_feedback_precision.py", "--device", "cuda", "--preset", "paper", *bench]
        command += ["--steps", "3", "--channels-last", "--json", str(out / "fb.json")]
        result = run(out, "feedback", command, 200)
        record("feedback", {**result, "result": read_json(out / "fb.json")})
    if "train_step" in args.parts:
        configs = ["plain", "cl+fused", "amp+cl+fused", "cl+fused+ckpt"]
        command = [py, "benchmarks/bench_train_step.py", *bench, "--steps", "5", "--configs", *configs]
        result = run(out, "train_step", command + ["--json", str(out / "train_step.json")], 200)
        record("train_step", {**result, "result": read_json(out / "train_step.json")})
    if "compile" in args.parts:
        configs = ["plain", "cl+fused+compile", "amp+cl+fused+compile"]
        command = [py, "benchmarks/bench_train_step.py", *bench, "--steps", "5", "--configs", *configs]
        result = run(out, "compile", command + ["--json", str(out / "compile.json")], 420)
        record("compile", {**result, "result": read_json(out / "compile.json")})
    if "loss" in args.parts:
        command = [py, "benchmarks/bench_loss.py", *bench, "--classes", "9", "--json", str(out / "loss.json")]
        result = run(out, "loss", command, 120)
        record("loss", {**result, "result": read_json(out / "loss.json")})
    data, runs = Path("/tmp/acdc"), Path("/tmp/reproduce_acdc")
    if "reproduce" in args.parts:
        result = run(out, "unpack", [py, args.unpack, args.acdc_pack, str(data)], 120)
        split = split_acdc(data) if result["rc"] == 0 else {}
        command = [py, "-m", "mgrad", "reproduce", "acdc", "--dataset_dir", str(data), "--output_dir", str(runs)]
        command += ["--time_budget", str(args.train_seconds), "--device", "cuda:0"]
        result = run(out, "reproduce", command, args.train_seconds + 240)
        table = read_json(runs / "table.json")
        if (runs / "table.md").is_file():
            (out / "table.md").write_text((runs / "table.md").read_text())
        record("reproduce", {**result, "split": split, "result": table})
    weights = next(iter(sorted(runs.glob("**/model.pt"))), None)
    if "feedback_trained" in args.parts and weights is not None:
        command = [py, "benchmarks/bench_feedback_precision.py", "--device", "cuda", *bench, "--no-timing"]
        command += ["--checkpoint", str(weights), "--images", str(data / "slices"), "--json", str(out / "fbt.json")]
        result = run(out, "feedback_trained", command, 120)
        record("feedback_trained", {**result, "result": read_json(out / "fbt.json")})
    # the speed does not depend on the weights: trained ones (where reproduce ran) also give the label agreement
    inference = [py, "benchmarks/bench_inference.py", "--networks", "MGRADUNet", "--slices", "240", "--size", "224"]
    inference += ["--sw-batch-size", "12"] + ([] if weights is None else ["--checkpoint", str(weights)])
    for part, extra in (("inference", []), ("inference_compile", ["--compile"])):
        if part in args.parts:
            command = inference + extra + ["--json", str(out / f"{part}.json")]
            result = run(out, part, command, 120 if part == "inference" else 360)
            record(
                part,
                {
                    **result,
                    "weights": "random" if weights is None else "trained",
                    "result": read_json(out / f"{part}.json"),
                },
            )
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
        result = run(out, "infer_end_to_end", command, 180)
        count = len(list(volumes.glob("*.h5")))
        engine = engine_seconds(out / "infer_end_to_end.log")
        record(
            "infer_end_to_end",
            {
                **result,
                "volumes": count,
                "volumes_per_second": count / result["seconds"],
                "engine_seconds": engine,
                "engine_volumes_per_second": count / engine if engine else None,
            },
        )
    if "profile" in args.parts:
        command = [py, "benchmarks/profile_step.py", "--out", str(out / "profile"), *bench, "--preset", "paper"]
        result = run(out, "profile", command, 120)
        record("profile", {**result, "result": read_json(out / "profile" / "profile.json")})


if __name__ == "__main__":
    main()
