"""Where the time goes: ``torch.profiler`` over one training iteration and one whole-volume inference call.

    python benchmarks/profile_step.py --out DIR [--config cl+fused --batch 12 --size 224 --preset paper --rows 40]

Training: one ``MGRADTrainer`` iteration (3 gated feedback passes, an AdamW step each) of ``--config`` (the
configurations of ``bench_train_step.py``; ``cl+fused`` is the bundle's CUDA default: float32 with TF32,
``feedback_precision="full"``, channels-last, fused AdamW) after ``--warmup`` iterations. Inference: one call of the
bundle's default ``VolumeSliceInferer`` (the fast path of this machine) on a volume of ``--batch`` slices, after two
warm-up calls. Random weights, the benchmarks' image of smooth blobs.

Writes ``DIR/train_ops.txt`` and ``DIR/inference_ops.txt`` (``key_averages`` tables, sorted by self device time on
CUDA, self CPU time on CPU) and ``DIR/profile.json``: for each of the two, the total and the ``--rows`` largest
entries (name, calls, self milliseconds, share of the total). On CUDA the entries are kernels and the operators
that launch them; the shares say which operators and kernels a speed-up has to come from.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_inference import make_volume  # noqa: E402
from bench_train_step import build_trainer  # noqa: E402
from common import machine_summary  # noqa: E402

PRESETS = {
    "paper": {"features": (64, 128, 256, 512, 1024), "rfb_channels": 64},
    "small": {"features": (16, 32, 64, 128, 256), "rfb_channels": 16},
}


def top_entries(profile, device_type: str, rows: int) -> dict:
    """The total self time and the ``rows`` largest entries of ``profile``'s ``key_averages``."""
    attribute = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"
    events = [e for e in profile.key_averages() if getattr(e, attribute) > 0]
    total = sum(getattr(e, attribute) for e in events)
    events.sort(key=lambda e: getattr(e, attribute), reverse=True)
    entries = [
        {
            "name": e.key,
            "calls": e.count,
            "self_ms": getattr(e, attribute) / 1000,
            "share": getattr(e, attribute) / total if total else 0.0,
        }
        for e in events[:rows]
    ]
    return {"time": attribute, "total_ms": total / 1000, "entries": entries}


def write_table(profile, device_type: str, rows: int, path: Path) -> None:
    sort_by = "self_cuda_time_total" if device_type == "cuda" else "self_cpu_time_total"
    path.write_text(profile.key_averages().table(sort_by=sort_by, row_limit=rows, max_name_column_width=80))


def activities(device_type: str) -> list:
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])


def profile_training(config: str, batch: int, size: int, warmup: int, widths: dict):
    """The profile of iteration ``warmup + 1`` of a trainer of ``config``."""
    import torch
    from ignite.engine import Events

    trainer = build_trainer(config, batch, size, warmup + 1, widths)
    device_type = trainer.state.device.type
    profiler = torch.profiler.profile(activities=activities(device_type))

    def sync() -> None:
        if device_type == "cuda":
            torch.cuda.synchronize()

    @trainer.on(Events.ITERATION_STARTED(once=warmup + 1))
    def start(engine) -> None:
        sync()
        profiler.start()

    @trainer.on(Events.ITERATION_COMPLETED(once=warmup + 1))
    def stop(engine) -> None:
        sync()
        profiler.stop()

    trainer.run()
    return profiler, device_type


def profile_inference(batch: int, size: int, widths: dict):
    """The profile of one default ``VolumeSliceInferer`` call on ``batch`` slices."""
    import torch

    from mgrad.inferers import VolumeSliceInferer
    from mgrad.networks import MGRADUNet

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    network = MGRADUNet(2, 1, 9, **widths).to(device).eval()
    volume = make_volume(size, batch).to(device)
    inferer = VolumeSliceInferer(roi_size=(size, size), sw_batch_size=batch)
    with torch.inference_mode():
        for _ in range(2):
            inferer(volume, network)
        if device.type == "cuda":
            torch.cuda.synchronize()
        with torch.profiler.profile(activities=activities(device.type)) as profiler:
            inferer(volume, network)
            if device.type == "cuda":
                torch.cuda.synchronize()
    return profiler, device.type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables and profile.json")
    parser.add_argument("--config", default="cl+fused", help="the training configuration (bench_train_step.py)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--size", type=int, default=224, help="in-plane size (a multiple of 16)")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="the network's widths")
    parser.add_argument("--warmup", type=int, default=2, help="training iterations before the profiled one")
    parser.add_argument("--rows", type=int, default=40, help="entries kept in each table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    widths = PRESETS[args.preset]
    report: dict = {"machine": machine_summary(), "config": args.config, "batch": args.batch, "size": args.size}
    report["preset"] = args.preset
    print(report["machine"])
    for name, (profiler, device_type) in (
        ("train", profile_training(args.config, args.batch, args.size, args.warmup, widths)),
        ("inference", profile_inference(args.batch, args.size, widths)),
    ):
        write_table(profiler, device_type, args.rows, args.out / f"{name}_ops.txt")
        report[name] = top_entries(profiler, device_type, args.rows)
        top = ", ".join(f"{e['name'][:40]} {100 * e['share']:.0f}%" for e in report[name]["entries"][:5])
        print(f"{name}: {report[name]['total_ms']:.1f} ms of {report[name]['time']}; largest: {top}", flush=True)
    (args.out / "profile.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
