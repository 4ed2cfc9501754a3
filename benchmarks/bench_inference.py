"""Whole-volume inference speed and memory: a 224x224 volume of ``--slices`` slices (150 by default) through
``mgrad.inferers.VolumeSliceInferer`` (MONAI's SliceInferer over the last axis), fast path against plain fp32.

    python benchmarks/bench_inference.py [--slices 150 --size 224 --sw-batch-size 1 --fused --compile --compile-mode M]

Networks, all in eval mode with random weights (seed 0), in_channels 1, out_channels 9: the full-size MGRAD-UNet
(widths 64..1024, RFB 64), and as baselines MONAI's ``BasicUNet`` (default features) and ``UNet`` (channels
16..256, strides 2, 2 residual units), through the same inferer and the same pipeline. Each row runs in its own
fresh process, under ``torch.inference_mode``: the network is warmed up on a 2-slice volume, then the whole volume is
timed once. "plain" is ``VolumeSliceInferer(fast=False)`` (fp32); "fast" is the path ``fast=None`` picks on this
machine (folded batch norms and channels-last; under bfloat16 autocast on CPUs with AMX and AMD CPUs with
AVX512-BF16, "fast fp32" on other CPUs; float16 autocast + cuDNN autotuning on CUDA); with ``--fused``, "fused" is
the fast path with each convolution and its ReLU as one cuDNN call (``VolumeSliceInferer(fuse_activations=True)``;
the same operations off CUDA); with ``--compile``, "compiled"
is the fast path compiled (``VolumeSliceInferer(compile=True)``, ``torch.compile``'s ``--compile-mode``), its
compilation paid in the warm-up ("warm-up s"). "vs mgrad plain" is the speed-up over the MGRAD-UNet plain row of the
same run; "peak MiB" is the process's peak resident memory during the timed volume above its memory before (network
and volume built; Linux /proc; on CUDA the peak allocated GPU memory). "same label" is the share of voxels whose
argmax label equals the plain path's of the same network.

With random weights many voxels have near-tied logits, which makes the label agreement a harsh test of the
low-precision path; ``--calibrate`` first sets every batch norm's running statistics from a few train-mode forward
passes on the volume (no gradient step), which gives the random network realistically scaled activations, and
reports the agreement for that model too. ``--checkpoint PATH`` times a trained MGRAD-UNet instead (its
``out_channels`` from the checkpoint), so "same label" is the agreement on trained weights. ``--json PATH`` writes the
rows (and the machine line) to a JSON file.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PeakMemory, in_fresh_process, machine_summary, trained_mgrad_unet  # noqa: E402

NETWORKS = ("MGRADUNet", "BasicUNet", "UNet")


def make_volume(size: int, slices: int, seed: int = 0):
    """A smooth phantom-like volume in [0, 1]: coarse random blobs, upsampled, with a little noise."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 8, 8, max(2, slices // 8), generator=g)
    vol = F.interpolate(coarse, size=(size, size, slices), mode="trilinear", align_corners=False)
    return (vol + 0.05 * torch.randn(vol.shape, generator=g)).clamp(0, 1)


def build_network(name: str, checkpoint: str | None = None):
    import torch
    from monai.networks.nets import BasicUNet, UNet

    from mgrad.networks import MGRADUNet

    torch.manual_seed(0)
    if name == "MGRADUNet" and checkpoint:
        return trained_mgrad_unet(checkpoint)
    if name == "MGRADUNet":
        return MGRADUNet(spatial_dims=2, in_channels=1, out_channels=9)
    if name == "BasicUNet":
        return BasicUNet(spatial_dims=2, in_channels=1, out_channels=9)
    if name == "UNet":
        return UNet(2, 1, 9, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    raise ValueError(name)


def calibrate(network, volume, slices_per_pass: int = 8, passes: int = 3) -> None:
    """Running statistics of every batch norm from train-mode forward passes over slices of ``volume``."""
    import torch

    for m in network.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes
    network.train()
    step = max(1, volume.shape[-1] // (slices_per_pass * passes))
    with torch.no_grad():
        for p in range(passes):
            idx = list(range(p, volume.shape[-1], step))[:slices_per_pass]
            network(volume[0, :, :, :, idx].permute(3, 0, 1, 2).contiguous())
    network.eval()


PATHS = ("plain", "fast", "fused", "compiled")


def run_row(
    name: str,
    path: str,
    size: int,
    slices: int,
    sw_batch_size: int,
    calibrated: bool,
    threads: int,
    checkpoint: str | None = None,
    compile_mode: str | None = None,
):
    import torch

    from mgrad.inferers import VolumeSliceInferer

    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    volume = make_volume(size, slices).to(device)
    network = build_network(name, checkpoint).to(device)
    if calibrated:
        calibrate(network, volume)
    network.eval()
    inferer = VolumeSliceInferer(
        roi_size=(size, size), sw_batch_size=sw_batch_size, fast=False if path == "plain" else None,
        fuse_activations=path == "fused", compile=path == "compiled", compile_options={"mode": compile_mode},
    )  # fmt: skip
    used_fast = inferer.uses_fast_path(device)
    low_precision = inferer.uses_low_precision(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        start = time.perf_counter()
        inferer(volume[..., :2], network)  # warm-up: kernel selection, weight layout, autotuning, compilation
        sync()
        warmup = time.perf_counter() - start
        memory = PeakMemory(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        logits = inferer(volume, network)
        sync()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = memory.mib()
        labels = logits.argmax(1).to(torch.uint8).cpu()
        top2 = logits.float().topk(2, dim=1).values
        margin = (top2[:, 0] - top2[:, 1]).median().item()
    return {
        "seconds": seconds,
        "warmup_seconds": warmup,
        "cpu_seconds": cpu_seconds,
        "peak_mib": peak,
        "labels": labels,
        "fast": used_fast,
        "low_precision": low_precision,
        "margin": margin,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=150, help="slices in the volume")
    parser.add_argument("--size", type=int, default=224, help="in-plane size (a multiple of 16)")
    parser.add_argument("--sw-batch-size", type=int, default=1, help="slices per network call")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--calibrate", action="store_true", help="also the MGRAD-UNet rows with calibrated BN")
    parser.add_argument("--fused", action="store_true", help="also the fast path with cuDNN's fused conv and ReLU")
    parser.add_argument("--compile", action="store_true", help="also the compiled fast path of each network")
    parser.add_argument("--compile-mode", default=None, help="torch.compile's mode for --compile (default: None)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--checkpoint", default=None, help="trained MGRAD-UNet weights (model.pt) instead of random")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    print(machine_summary(threads=args.threads))
    print(
        f"volume 1x1x{args.size}x{args.size}x{args.slices} through VolumeSliceInferer(sw_batch_size="
        f"{args.sw_batch_size}), torch.inference_mode, {'trained' if args.checkpoint else 'random'} weights; "
        "each row in a fresh process"
    )
    paths = [
        p
        for p in PATHS
        if p in ("plain", "fast") or (p == "fused" and args.fused) or (p == "compiled" and args.compile)
    ]
    rows = [(n, path, False) for path in paths for n in args.networks]
    if args.calibrate and "MGRADUNet" in args.networks:
        rows += [("MGRADUNet", path, True) for path in paths]
    results = {}
    for name, path, calibrated in rows:
        r = in_fresh_process(
            run_row, name, path, args.size, args.slices, args.sw_batch_size, calibrated, args.threads, args.checkpoint,
            args.compile_mode,
        )  # fmt: skip
        r["path"] = path if path == "plain" or r["low_precision"] else path + " fp32"
        results[name, path, calibrated] = r
        print(f"  {name}{' (calibrated BN)' if calibrated else ''} {r['path']}: {r['seconds']:.2f} s", flush=True)
    reference = results["MGRADUNet", "plain", False]["seconds"] if "MGRADUNet" in args.networks else None
    print()
    header = f"{'network':<26}{'path':<14}{'s/volume':>9}{'s/slice':>9}{'vs mgrad plain':>16}{'vs own plain':>14}"
    print(
        header + f"{'CPU s/vol':>11}{'CPU vs own':>12}{'peak MiB':>10}{'same label':>12}{'median margin':>15}"
        f"{'warm-up s':>11}"
    )
    for (name, _path, calibrated), r in results.items():
        plain = results[name, "plain", calibrated]
        same = (r["labels"] == plain["labels"]).float().mean().item()
        label = name + (" (calibrated BN)" if calibrated else "")
        vs_mgrad = f"{reference / r['seconds']:.2f}x" if reference else "-"
        print(
            f"{label:<26}{r['path']:<14}{r['seconds']:>9.2f}{r['seconds'] / args.slices:>9.3f}"
            f"{vs_mgrad:>16}{plain['seconds'] / r['seconds']:>13.2f}x{r['cpu_seconds']:>11.1f}"
            f"{plain['cpu_seconds'] / r['cpu_seconds']:>11.2f}x{r['peak_mib']:>10.0f}{100 * same:>11.3f}%"
            f"{r['margin']:>15.3g}{r['warmup_seconds']:>11.1f}"
        )
    print("\nmedian margin: median over voxels of the gap between the two largest logits (how close labels are).")
    print("CPU s/vol: the process's CPU time (all threads); on a loaded machine it is steadier than wall time.")
    if args.json:
        rows = [
            {
                "network": name,
                "calibrated": calibrated,
                **{k: v for k, v in r.items() if k != "labels"},
                "same_label": (r["labels"] == results[name, "plain", calibrated]["labels"]).float().mean().item(),
                "slices": args.slices,
            }
            for (name, _path, calibrated), r in results.items()
        ]
        args.json.write_text(json.dumps({"machine": machine_summary(threads=args.threads), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
