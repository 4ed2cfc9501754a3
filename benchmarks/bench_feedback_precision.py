"""The gated feedback under low precision: how far the feedback's change of the logits is from a float64 computation,
and what each choice of ``MGRADUNet(feedback_precision=...)`` costs in a training step.

    python benchmarks/bench_feedback_precision.py [--device cpu --preset paper --size 96 --batch 2 --json out.json]
                                                  [--checkpoint model.pt --images DIR --no-timing]

"effect" is ``net(x, feedback) - net(x, 0)`` at fixed weights in train mode (both decoders' logits; two passes with
feedback, as training's second, the feedback taken from a first pass as in training, which under float16 and TF32
keeps the low precision), seed 0, random weights, the benchmarks' image of smooth blobs; ``--checkpoint``
takes trained weights instead (their widths and classes), ``--images`` real slices (a folder of SSL4MIS ``*.h5``
slices, as the shared ACDC data's ``slices``). "rel. error" is
``||effect - effect_float64|| / ||effect_float64||`` against a float64 copy of the same network. The float64 line
above the table says how sensitive the effect is itself: its relative change when the input is scaled by
``1 + 1e-4 * noise`` (a network at initialisation, with batch statistics over a small batch, is far more sensitive
than a trained one).

Precisions: ``fp32`` (on CUDA with TF32 off), ``tf32`` (CUDA: float32 with TF32 convolutions, PyTorch's default),
``fp16`` (CUDA: float16 autocast with the trainer's gradient scaler; on a CPU its error only, ``--precisions fp32
fp16 bf16 --no-timing``), ``bf16`` (bfloat16 autocast). Each runs with
``feedback_precision`` ``full``, ``split`` and ``autocast`` (in plain ``fp32`` all three compute the same: one
row). "s/step" is the median of ``--steps`` timed ``MGRADTrainer`` iterations (3 passes, an AdamW step each, after one
warm-up), "peak MiB" the peak memory of the timed iterations (CUDA: allocated GPU memory; CPU: resident memory of a
fresh process above its size before the run).
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train_step import make_batch  # noqa: E402
from common import PRESET_WIDTHS, PeakMemory, in_fresh_process, machine_summary, trained_mgrad_unet  # noqa: E402

FEEDBACK_PRECISIONS = ("full", "split", "autocast")


def precisions(device_type: str) -> list[str]:
    """The default precisions of a device (float16 autocast runs on a CPU too, for the error: ``--precisions``)."""
    return ["fp32", "tf32", "fp16", "bf16"] if device_type == "cuda" else ["fp32", "bf16"]


def rows(chosen: list[str]) -> list[tuple[str, str]]:
    """(precision, feedback_precision) pairs; plain fp32 computes the same for every feedback_precision."""
    return [("fp32", "full")] + [(p, f) for p in chosen if p != "fp32" for f in FEEDBACK_PRECISIONS]


class Precision:
    """Context: TF32 convolutions on or off (CUDA) and autocast in the given precision."""

    def __init__(self, name: str, device_type: str) -> None:
        import torch

        self.name, self.device_type = name, device_type
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name)
        self.autocast = torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def __enter__(self) -> "Precision":
        import torch

        self.tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = self.name != "fp32"
        self.autocast.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.autocast.__exit__(*exc)
        torch.backends.cudnn.allow_tf32 = self.tf32


def build(network: str, feedback_precision: str, device):
    """``network``: a preset's name (random weights, seed 0, 9 classes) or the path of a trained checkpoint."""
    import torch

    from mgrad.networks import MGRADUNet

    if network not in PRESET_WIDTHS:
        return trained_mgrad_unet(network, feedback_precision=feedback_precision).to(device)
    torch.manual_seed(0)
    return MGRADUNet(2, 1, 9, **PRESET_WIDTHS[network], feedback_precision=feedback_precision).to(device)


def load_slices(folder: str, batch: int, size: int):
    """``batch`` slices spread over the sorted SSL4MIS slice files (``*.h5``, an ``image`` in [0, 1]) of ``folder``,
    resized to ``size`` x ``size`` as the bundle does: ``(batch, 1, size, size)``."""
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F

    files = sorted(Path(folder).glob("*.h5"))
    if len(files) < batch:
        raise ValueError(f"{folder}: {len(files)} slice files (*.h5), need {batch}.")
    chosen = [files[i] for i in np.linspace(0, len(files) - 1, batch).round().astype(int)]
    images = []
    for path in chosen:
        with h5py.File(path, "r") as f:
            image = torch.from_numpy(np.asarray(f["image"], dtype=np.float32))[None, None]
        images.append(F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(images)


def effect(net, x, fb=None):
    """``net(x, feedback) - net(x, 0)`` (both decoders, flattened, float64) in train mode, the logits without
    feedback, and the feedback used (from a first pass where ``fb`` is ``None``)."""
    import torch

    with torch.no_grad():
        fb = net.feedback_from(net.train()(x)) if fb is None else fb
        second, zero = net(x, fb), net(x, [torch.zeros_like(f) for f in fb])
        change = [(second.pred1 - zero.pred1).flatten(), (second.pred2 - zero.pred2).flatten()]
        logits = [zero.pred1.flatten(), zero.pred2.flatten()]
    return torch.cat(change).double(), torch.cat(logits).double(), fb


def effect_errors(
    network: str, size: int, batch: int, device_name: str, chosen: list[str], images: str | None = None
) -> dict:
    """Relative error of the effect for every row of the ``chosen`` precisions, and the float64 effect's own
    sensitivity; ``images``: a folder of slices (:func:`load_slices`) instead of the blob image."""
    import torch

    device = torch.device(device_name)
    x = (make_batch(batch, size)["image"] if images is None else load_slices(images, batch, size)).to(device)
    reference_net = copy.deepcopy(build(network, "autocast", device)).double()
    reference, logits, fb = effect(reference_net, x.double())
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(device).double()
    perturbed, _, _ = effect(reference_net, x.double() * (1 + 1e-4 * noise), fb)
    del reference_net
    result = {
        "effect_over_logits": (reference.norm() / logits.norm()).item(),
        "float64_sensitivity_1e-4": ((perturbed - reference).norm() / reference.norm()).item(),
        "errors": {},
    }
    for precision, feedback_precision in rows(chosen):
        net = build(network, feedback_precision, device)
        with Precision(precision, device.type):
            change, _, _ = effect(net, x)
        result["errors"][f"{precision}/{feedback_precision}"] = ((change - reference).norm() / reference.norm()).item()
    return result


def time_row(precision, feedback_precision, network, size, batch, steps, device_name, channels_last, threads):
    import torch
    from ignite.engine import Events

    from mgrad.engines import MGRADTrainer
    from mgrad.losses import MGRADLoss

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    net = build(network, feedback_precision, device)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    trainer = MGRADTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[make_batch(batch, size)] * (1 + steps),
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4),
        loss_function=MGRADLoss(),
        amp=amp_dtype is not None and (device.type == "cuda" or amp_dtype == torch.bfloat16),
        amp_kwargs={"dtype": amp_dtype} if amp_dtype is not None and device.type == "cuda" else None,
        channels_last=channels_last,
        decollate=False,
    )
    times: list[float] = []

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def started(engine) -> None:
        sync()
        if engine.state.iteration == 2:  # after the warm-up
            if device.type == "cuda":
                memory.restart()  # without the warm-up's autotuning workspaces (the CPU's peak counts the run's growth)
            times.clear()
        times.append(-time.perf_counter())

    def completed(engine) -> None:
        sync()
        times[-1] += time.perf_counter()

    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    memory = PeakMemory(device)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    try:
        trainer.run()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return {"seconds": statistics.median(times), "peak_mib": memory.mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda where available)")
    parser.add_argument("--preset", choices=sorted(PRESET_WIDTHS), default="paper")
    parser.add_argument("--checkpoint", default=None, help="trained weights (model.pt) instead of the preset's random")
    parser.add_argument("--images", default=None, help="a folder of SSL4MIS slices (*.h5) instead of the blob image")
    parser.add_argument("--size", type=int, default=224, help="in-plane size (a multiple of 16)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed training iterations per row (after 1 warm-up)")
    parser.add_argument("--channels-last", action="store_true", help="train in channels-last memory format")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp32 tf32 fp16 bf16 (CPU: fp32 bf16)")
    parser.add_argument("--no-timing", action="store_true", help="only the effect's errors")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    network = args.checkpoint or args.preset
    chosen = args.precisions or precisions(torch.device(device).type)
    if device == "cpu" and not args.no_timing and "fp16" in chosen:
        parser.error("float16 training runs on CUDA only: time it there, or give --no-timing for its error on a CPU")
    hardware = machine_summary(threads=args.threads)
    print(hardware)
    print(
        f"MGRADUNet {network}, batch {args.batch} of {args.images or 'blob images'}, {args.size}x{args.size}, "
        f"device {device}, channels_last {args.channels_last}"
    )
    errors = effect_errors(network, args.size, args.batch, device, chosen, args.images)
    print(
        f"effect / logits (float64): {errors['effect_over_logits']:.2e}; float64 effect's change for a 1e-4 "
        f"input perturbation: {100 * errors['float64_sensitivity_1e-4']:.1f}%",
        flush=True,
    )
    results = []
    for precision, feedback_precision in rows(chosen):
        row = {
            "precision": precision,
            "feedback_precision": feedback_precision,
            "rel_error": errors["errors"][f"{precision}/{feedback_precision}"],
        }
        if not args.no_timing:
            timing_args = (precision, feedback_precision, network, args.size, args.batch, args.steps, device)
            timing_args += (args.channels_last, args.threads)
            row.update(time_row(*timing_args) if device == "cuda" else in_fresh_process(time_row, *timing_args))
        results.append(row)
        timing = f"{row['seconds']:>9.3f}{row['peak_mib']:>10.0f}" if "seconds" in row else ""
        print(f"  {precision:<6}{feedback_precision:<10}{row['rel_error']:>11.4f}{timing}", flush=True)
    print()
    print(f"{'precision':<11}{'feedback':<10}{'rel. error':>11}{'s/step':>9}{'vs fp32':>9}{'peak MiB':>10}")
    base = results[0].get("seconds")
    for r in results:
        line = f"{r['precision']:<11}{r['feedback_precision']:<10}{r['rel_error']:>11.4f}"
        if "seconds" in r:
            line += f"{r['seconds']:>9.3f}{base / r['seconds']:>8.2f}x{r['peak_mib']:>10.0f}"
        print(line)
    if args.json is not None:
        report = {"hardware": hardware, "args": {k: str(v) for k, v in vars(args).items()}, **errors, "rows": results}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
