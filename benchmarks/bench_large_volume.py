"""Peak host memory of whole-volume inference on a large CT: preprocessing, slice inference, inversion to the
original grid and saving, as the bundle's inference config runs them.

    python benchmarks/bench_large_volume.py [--size 512 --slices 600 --classes 9 --modes channelwise,argmax_first]

A synthetic int16 CT of ``size`` x ``size`` x ``slices`` voxels (uncompressed NIfTI) goes through
``mgrad.transforms.volume_transforms("ct", 96)``, a narrow MGRAD-UNet (widths 8..128, random weights, eval mode,
fp32; the network's width barely changes host memory) through ``VolumeSliceInferer`` with ``classes`` outputs, then
back to the original grid and to disk. Modes:

- ``channelwise``: :class:`mgrad.transforms.invert.InvertLabelsd`, one class channel at a time (the default);
- ``argmax_first``: argmax on the network grid, labels inverted by nearest neighbour (TransUNet's protocol);
- ``probabilities``: ``channelwise`` plus the uint16 probability map of every class;
- ``whole``: MONAI's ``Invertd`` on all channels at once, then ``AsDiscreted(argmax=True)`` (the earlier path).

Each mode runs in its own fresh process; "peak RSS" is that process's whole peak resident memory (Linux VmHWM:
interpreter, libraries, network, volume and everything), the figure a machine has to provide.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import in_fresh_process, machine_summary, memory_kib, start_memory  # noqa: E402

MODES = ("channelwise", "argmax_first", "probabilities", "whole")


def make_ct(path: Path, size: int, slices: int) -> None:
    """An int16 CT-like volume: an ellipse of soft tissue with a few brighter blobs, 0.7 x 0.7 x 1.0 mm."""
    import nibabel as nib
    import numpy as np

    y, x = np.ogrid[:size, :size]
    body = (((y - size / 2) / (0.42 * size)) ** 2 + ((x - size / 2) / (0.35 * size)) ** 2) < 1
    organ = (((y - size / 2.5) / (0.1 * size)) ** 2 + ((x - size / 1.8) / (0.12 * size)) ** 2) < 1
    volume = np.full((size, size, slices), -1000, np.int16)
    rng = np.random.default_rng(0)
    for z in range(slices):
        plane = np.where(body, 40, -1000).astype(np.int16)
        plane[organ] = 120 + (z % 50)
        volume[:, :, z] = plane + rng.integers(-20, 20, size=(size, size), dtype=np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([-0.7, -0.7, 1.0, 1.0])), str(path))


def run_mode(mode: str, image: str, out_dir: str, classes: int) -> dict:
    """One inference of ``image`` in ``mode``; returns timings and the process's peak resident memory."""
    import numpy as np
    import torch
    from monai.data import MetaTensor
    from monai.transforms import AsDiscreted, Invertd, SaveImaged

    from mgrad.inferers import VolumeSliceInferer
    from mgrad.networks import MGRADUNet
    from mgrad.transforms import volume_transforms
    from mgrad.transforms.invert import InvertLabelsd
    from mgrad.writers import AtomicNibabelWriter, AtomicProbabilityWriter

    torch.manual_seed(0)
    times = {}
    network = MGRADUNet(2, 1, classes, features=(8, 16, 32, 64, 128), rfb_channels=8).eval()
    pre = volume_transforms("ct", 96, with_label=False)
    stage_peaks = {}

    def stage(name: str, t0: float) -> None:
        times[f"{name}_s"] = time.perf_counter() - t0
        stage_peaks[name] = memory_kib("VmHWM") / 2**20
        start_memory()

    t = time.perf_counter()
    data = pre({"image": image})
    stage("preprocess", t)
    t = time.perf_counter()
    with torch.inference_mode():
        logits = VolumeSliceInferer((96, 96), sw_batch_size=32, fast=False)(data["image"][None], network)[0]
    stage("inference", t)
    t = time.perf_counter()
    d = {"pred": MetaTensor(logits), "image": data["image"]}
    del logits, data
    if mode == "whole":
        d = AsDiscreted("pred", argmax=True)(Invertd("pred", pre, orig_keys="image", nearest_interp=False)(d))
    else:
        prob_key = "prob" if mode == "probabilities" else None
        d = InvertLabelsd(pre, prob_key=prob_key, argmax_first=mode == "argmax_first")(d)
    stage("invert", t)
    t = time.perf_counter()
    save = dict(output_dir=out_dir, separate_folder=False, resample=False)
    SaveImaged("pred", output_postfix=mode, output_dtype=np.uint8, writer=AtomicNibabelWriter, **save)(d)
    if "prob" in d:
        SaveImaged("prob", output_postfix="prob", output_dtype=np.uint16, writer=AtomicProbabilityWriter, **save)(d)
    stage("save", t)
    return {**times, "peak_rss_gib": max(stage_peaks.values()), "stage_peaks": stage_peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--modes", default="channelwise,argmax_first", help=f"comma-separated, of {MODES}")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= set(MODES):
        raise SystemExit(f"unknown mode in {modes}; choose from {MODES}")
    print(machine_summary())
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "ct.nii"
        make_ct(image, args.size, args.slices)
        print(f"volume {args.size}x{args.size}x{args.slices} int16, {args.classes} classes, 96x96 slices")
        print("peak resident memory (GiB) of the whole process, overall and during each stage (with its seconds):")
        print(
            f"{'mode':<14} {'peak':>6} " + " ".join(f"{k:>15}" for k in ("preprocess", "inference", "invert", "save"))
        )
        for mode in modes:
            r = in_fresh_process(run_mode, mode, str(image), tmp, args.classes)
            stages = " ".join(
                f"{r['stage_peaks'][k]:>6.2f} ({r[k + '_s']:>5.1f}s)"
                for k in ("preprocess", "inference", "invert", "save")
            )
            print(f"{mode:<14} {r['peak_rss_gib']:>6.2f} {stages}")


if __name__ == "__main__":
    main()
