"""Where the time goes: ``torch.profiler`` over one training iteration and one whole-volume inference call.

    python benchmarks/profile_step.py --out DIR [--config cl+fused --batch 12 --size 224 --preset paper --rows 40]

Training: one ``MGRADTrainer`` iteration (3 gated feedback passes, an AdamW step each) of ``--config`` (the
configurations of ``bench_train_step.py``; ``cl+fused`` is the bundle's CUDA default: float32 with TF32,
``feedback_precision="full"``, channels-last, fused AdamW) after ``--warmup`` iterations. Inference: one call of the
bundle's default ``VolumeSliceInferer`` (the fast path of this machine) on a volume of ``--batch`` slices, after two
warm-up calls. Random weights, the benchmarks' image of smooth blobs.

Convolutions: every distinct convolution of the network (input shape, kernel, dilation, ...), timed on its own in
the fast path's precision and memory format: milliseconds a call, calls a forward, and the rate it reaches
(TFLOP/s), so a slow shape (a dilated or a 1xk convolution, say) shows beside the ones that run well. Then each
one's forward as training computes it: TF32, the default exact feedback precision (three split-bfloat16 products),
the same three products stacked into one convolution (a candidate), and float16.

Memory: the tensors one float32 training pass keeps for its backward pass, by block (what activation checkpointing
of that block would trade for its recomputation).

Writes ``DIR/train_ops.txt`` and ``DIR/inference_ops.txt`` (``key_averages`` tables, sorted by self device time on
CUDA, self CPU time on CPU), ``DIR/convolutions.txt``, ``DIR/training_convolutions.txt`` and ``DIR/profile.json``:
for training and inference the total and the ``--rows`` largest entries (name, calls, self milliseconds, share of
the total), the saved activations by block, and both convolution tables. On CUDA the entries are kernels and the
operators that launch them; the shares say which operators and kernels a speed-up has to come from.
"""

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_inference import make_volume  # noqa: E402
from bench_train_step import build_trainer  # noqa: E402
from common import PRESET_WIDTHS, machine_summary  # noqa: E402

from mgrad.writers import write_json  # noqa: E402


def top_entries(profile, device_type: str, rows: int) -> dict:
    """The total self time and the ``rows`` largest entries of ``profile``'s ``key_averages``.

    On CUDA an operator's self device time is that of the kernels it launched, which are entries of their own: the
    total is the kernels' time, and each entry's share (operator or kernel) is a share of it."""
    from torch.autograd import DeviceType

    attribute = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"
    events = [e for e in profile.key_averages() if getattr(e, attribute) > 0]
    counted = [e for e in events if device_type != "cuda" or e.device_type != DeviceType.CPU]
    total = sum(getattr(e, attribute) for e in counted)
    events.sort(key=lambda e: getattr(e, attribute), reverse=True)
    entries = [
        {
            "name": e.key,
            "kind": "operator" if e.device_type == DeviceType.CPU else "kernel",
            "calls": e.count,
            "self_ms": getattr(e, attribute) / 1000,
            "share": getattr(e, attribute) / total if total else 0.0,
        }
        for e in events[:rows]
    ]
    return {"time": attribute, "total_ms": total / 1000, "entries": entries}


def write_table(profile, device_type: str, rows: int, path: Path) -> None:
    sort_by = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"
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


def saved_activations(batch: int, size: int, widths: dict, device) -> dict[str, float]:
    """MiB of the tensors one training pass (forward and loss, float32, no checkpointing) keeps for its backward pass,
    by the block that saved them (``encoder.i``, ``rfbs.i``, ``msd``, ``grad``, ``side_heads``, ``loss``); a storage
    saved twice counts once. Checkpointing a block trades its share for its recomputation."""
    import torch

    from mgrad.losses import MGRADLoss
    from mgrad.networks import MGRADUNet

    network = MGRADUNet(2, 1, 9, **widths).to(device).train()
    blocks = {f"{name}.{i}": m for name in ("encoder", "rfbs") for i, m in enumerate(getattr(network, name))}
    blocks.update(msd=network.msd, grad=network.grad, side_heads=network.side_heads)
    inside, saved, seen = ["other"], {}, set()

    def enter(name):
        return lambda module, inputs: inside.append(name)

    def leave(module, inputs, output) -> None:  # a forward hook returning a value would replace the output
        inside.pop()

    hooks = [m.register_forward_pre_hook(enter(name)) for name, m in blocks.items()]
    hooks += [m.register_forward_hook(leave) for m in blocks.values()]

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            saved[inside[-1]] = saved.get(inside[-1], 0.0) + storage.nbytes() / 2**20
        return tensor

    images = torch.rand(batch, 1, size, size, device=device)
    labels = torch.randint(0, 9, (batch, 1, size, size), device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = network(images)
        inside.append("loss")
        loss = MGRADLoss(squared_pred=True)(output, labels)
    del loss, output
    for hook in hooks:
        hook.remove()
    return dict(sorted(saved.items(), key=lambda item: -item[1]))


def network_convolutions(batch: int, size: int, widths: dict, device) -> dict[tuple, int]:
    """``(input shape, weight shape, stride, padding, dilation, groups) -> calls`` of one eval forward."""
    import torch

    from mgrad.networks import MGRADUNet

    network = MGRADUNet(2, 1, 9, **widths).to(device).eval()
    found: dict[tuple, int] = {}

    def record(module, inputs, output) -> None:
        key = (tuple(inputs[0].shape), tuple(module.weight.shape), module.stride, module.padding, module.dilation)
        found[key + (module.groups,)] = found.get(key + (module.groups,), 0) + 1

    hooks = [m.register_forward_hook(record) for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        network(torch.rand(batch, 1, size, size, device=device))
    for hook in hooks:
        hook.remove()
    return found


def seconds_per_call(call, device, repeats: int = 3) -> float:
    """Mean seconds of ``call()`` after one untimed call (autotuning, primitive creation)."""
    import torch

    call()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def convolution_table(found: dict[tuple, int], size: int) -> list[dict]:
    """Each distinct convolution of ``found`` (:func:`network_convolutions`), timed alone as the fast path runs it."""
    import torch
    import torch.nn.functional as F

    from mgrad.inferers import VolumeSliceInferer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    low = VolumeSliceInferer((size, size)).uses_low_precision(device)
    dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if low else torch.float32
    torch.backends.cudnn.benchmark = True
    rows = []
    with torch.inference_mode():
        for config, calls in found.items():
            shape, weight_shape, stride, padding, dilation, groups = config
            x = torch.rand(shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            w = torch.rand(weight_shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            b = torch.rand(weight_shape[0], device=device, dtype=dtype)
            conv = partial(F.conv2d, x, w, b, stride, padding, dilation, groups)
            seconds = seconds_per_call(conv, device)
            out_numel = conv().numel()
            flop = 2 * out_numel * weight_shape[1] * weight_shape[2] * weight_shape[3]
            rows.append(
                {
                    "input": list(shape), "weight": list(weight_shape), "dilation": list(dilation),
                    "padding": list(padding), "groups": groups, "calls": calls, "ms": 1000 * seconds,
                    "total_ms": 1000 * seconds * calls, "tflops": flop / seconds / 1e12, "dtype": str(dtype),
                }
            )  # fmt: skip
    rows.sort(key=lambda r: r["total_ms"], reverse=True)
    return rows


def stacked_split_conv(x, weight, bias, stride, padding, dilation, groups):
    """The split-bfloat16 product of :func:`mgrad.networks.precision.split_bfloat16_conv` as one convolution: the
    three products' operands stacked along the input channels (``[x_hi, x_lo, x_hi]`` with ``[w_hi, w_hi, w_lo]``),
    so one wider convolution sums them in its float32 accumulator (a candidate, timed here beside the three)."""
    import torch
    import torch.nn.functional as F

    from mgrad.networks.precision import split_bfloat16

    if groups != 1:
        raise ValueError("stacked_split_conv takes ungrouped convolutions only.")
    x_hi, x_lo = split_bfloat16(x)
    w_hi, w_lo = split_bfloat16(weight)
    stacked_x = torch.cat([x_hi, x_lo, x_hi], 1).contiguous(memory_format=torch.channels_last)
    stacked_w = torch.cat([w_hi, w_hi, w_lo], 1).contiguous(memory_format=torch.channels_last)
    return F.conv2d(stacked_x, stacked_w, bias, stride, padding, dilation)


def training_convolution_table(found: dict[tuple, int]) -> list[dict]:
    """Each distinct convolution's forward in ``found`` (:func:`network_convolutions`) as training computes it,
    float32 operands, channels-last: ``tf32`` (TF32 convolutions: the released code's arithmetic), ``split`` (the
    default ``feedback_precision="full"``: three products), ``stacked`` (the same products as one convolution,
    :func:`stacked_split_conv`), ``fp16`` (autocast's operands); milliseconds a forward for each, and the largest
    relative difference of ``stacked`` from ``split``."""
    import torch
    import torch.nn.functional as F

    from mgrad.networks.precision import split_bfloat16_conv

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    rows = []
    try:
        with torch.no_grad():
            for config, calls in found.items():
                shape, weight_shape, stride, padding, dilation, groups = config
                x = torch.rand(shape, device=device).contiguous(memory_format=torch.channels_last)
                w = torch.randn(weight_shape, device=device).contiguous(memory_format=torch.channels_last)
                b = torch.randn(weight_shape[0], device=device)
                args = (stride, padding, dilation, groups)
                variants = {
                    "tf32": partial(F.conv2d, x, w, b, *args),
                    "split": partial(split_bfloat16_conv, x, w, b, *args, torch.float32),
                    "stacked": partial(stacked_split_conv, x, w, b, *args),
                    "fp16": partial(F.conv2d, x.half(), w.half(), b.half(), *args),
                }
                row = {"input": list(shape), "weight": list(weight_shape), "dilation": list(dilation), "calls": calls}
                for name, call in variants.items():
                    row[f"{name}_ms"] = 1000 * calls * seconds_per_call(call, device)
                split, stacked = variants["split"](), variants["stacked"]()
                row["stacked_vs_split"] = ((stacked - split).abs().max() / split.abs().max()).item()
                rows.append(row)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    rows.sort(key=lambda r: r["split_ms"], reverse=True)
    return rows


def write_training_convolutions(rows: list[dict], path: Path) -> None:
    names = ("tf32", "split", "stacked", "fp16")
    lines = [f"{'input':<20}{'weight':<18}{'dilation':<10}{'calls':>6}" + "".join(f"{n + ' ms':>11}" for n in names)]
    lines[0] += f"{'stacked vs split':>18}"
    for r in rows:
        lines.append(
            f"{'x'.join(map(str, r['input'])):<20}{'x'.join(map(str, r['weight'])):<18}"
            f"{'x'.join(map(str, r['dilation'])):<10}{r['calls']:>6}"
            + "".join(f"{r[n + '_ms']:>11.3f}" for n in names)
            + f"{r['stacked_vs_split']:>18.2e}"
        )
    totals = ", ".join(f"{n} {sum(r[n + '_ms'] for r in rows):.1f} ms" for n in names)
    lines.append(f"all convolution forwards of one pass (float32 operands, channels-last): {totals}")
    path.write_text("\n".join(lines) + "\n")


def write_convolutions(rows: list[dict], path: Path) -> None:
    total = sum(r["total_ms"] for r in rows)
    lines = [f"{'input':<20}{'weight':<18}{'dilation':<10}{'calls':>6}{'ms/call':>9}{'ms/forward':>11}{'share':>7}"]
    lines[0] += f"{'TFLOP/s':>9}"
    for r in rows:
        lines.append(
            f"{'x'.join(map(str, r['input'])):<20}{'x'.join(map(str, r['weight'])):<18}"
            f"{'x'.join(map(str, r['dilation'])):<10}{r['calls']:>6}{r['ms']:>9.3f}{r['total_ms']:>11.3f}"
            f"{100 * r['total_ms'] / total:>6.1f}%{r['tflops']:>9.3g}"
        )
    lines.append(f"all convolutions of one forward, timed alone: {total:.1f} ms ({rows[0]['dtype']}, channels-last)")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables and profile.json")
    parser.add_argument("--config", default="cl+fused", help="the training configuration (bench_train_step.py)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--size", type=int, default=224, help="in-plane size (a multiple of 16)")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESET_WIDTHS), help="the network's widths")
    parser.add_argument("--warmup", type=int, default=2, help="training iterations before the profiled one")
    parser.add_argument("--rows", type=int, default=40, help="entries kept in each table")
    args = parser.parse_args()

    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    widths = PRESET_WIDTHS[args.preset]
    report: dict = {"machine": machine_summary(), "config": args.config, "batch": args.batch, "size": args.size}
    report["preset"] = args.preset
    print(report["machine"])
    # each result is written as soon as it exists: a part that fails or runs out of time loses nothing before it
    for name, profile in (
        ("train", lambda: profile_training(args.config, args.batch, args.size, args.warmup, widths)),
        ("inference", lambda: profile_inference(args.batch, args.size, widths)),
    ):
        profiler, device_type = profile()
        write_table(profiler, device_type, args.rows, args.out / f"{name}_ops.txt")
        report[name] = top_entries(profiler, device_type, args.rows)
        write_json(args.out / "profile.json", report)
        top = ", ".join(f"{e['name'][:40]} {100 * e['share']:.0f}%" for e in report[name]["entries"][:5])
        print(f"{name}: {report[name]['total_ms']:.1f} ms of {report[name]['time']}; largest: {top}", flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    saved = report["saved_activations_mib"] = saved_activations(args.batch, args.size, widths, device)
    write_json(args.out / "profile.json", report)
    total = sum(saved.values())
    top = ", ".join(f"{name} {100 * mib / total:.0f}%" for name, mib in list(saved.items())[:5])
    print(f"saved activations of a training pass: {total:.0f} MiB; {top}", flush=True)
    found = network_convolutions(args.batch, args.size, widths, device)
    convolutions = report["convolutions"] = convolution_table(found, args.size)
    write_convolutions(convolutions, args.out / "convolutions.txt")
    write_json(args.out / "profile.json", report)
    top = ", ".join(f"{'x'.join(map(str, r['weight']))} dilation {r['dilation'][0]} on {r['input'][-1]}: "
                    f"{r['total_ms']:.2f} ms at {r['tflops']:.3g} TFLOP/s" for r in convolutions[:3])  # fmt: skip
    print(f"convolutions: {len(convolutions)} distinct, {sum(r['total_ms'] for r in convolutions):.1f} ms; {top}")
    training = report["training_convolutions"] = training_convolution_table(found)
    write_training_convolutions(training, args.out / "training_convolutions.txt")
    write_json(args.out / "profile.json", report)
    names = ("tf32", "split", "stacked", "fp16")
    print(
        "training convolution forwards: "
        + ", ".join(f"{n} {sum(r[n + '_ms'] for r in training):.1f} ms" for n in names)
    )


if __name__ == "__main__":
    main()
