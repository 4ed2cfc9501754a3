"""3D metrics: mgrad.metrics against medpy on a 512x512x150, 8-organ label volume and a perturbed prediction.

    python benchmarks/bench_metrics.py [--shape 512 512 150]

Each method runs in its own fresh process; "peak MiB" is what the metric computation added at its peak: on CPU the
process's resident memory above that just before (inputs loaded; Linux /proc, else the lifetime peak), on CUDA the
GPU memory allocated above the inputs.
medpy takes several minutes on the full size (four full-volume distance transforms per class).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import PeakMemory, in_fresh_process, machine_summary  # noqa: E402

SPACING = (0.78, 0.78, 2.5)  # mm, typical abdominal CT (Synapse)
# Synapse class: (centre, semi-axes) in voxels of a 512x512x150 grid, painted in this order (later ones on top)
ORGANS = {
    5: ((230, 170, 80), (90, 80, 45)),  # liver
    8: ((200, 330, 95), (50, 45, 30)),  # stomach
    7: ((230, 380, 85), (40, 30, 25)),  # spleen
    3: ((300, 360, 60), (30, 22, 25)),  # left kidney
    4: ((300, 150, 55), (30, 22, 25)),  # right kidney
    6: ((260, 270, 75), (15, 60, 10)),  # pancreas
    2: ((300, 210, 85), (18, 14, 12)),  # gallbladder
    1: ((280, 250, 75), (12, 12, 65)),  # aorta
}
METRICS = ("hd95", "asd")


def organ_volume(shape: tuple[int, int, int], seed: int, jitter: float = 0.0, blobs: int = 0) -> np.ndarray:
    """Eight smooth, irregular organs (ellipsoids deformed by low-frequency noise); ``jitter`` moves and resizes
    them and changes their outline, ``blobs`` adds small spurious components anywhere (a prediction's errors)."""
    rng = np.random.default_rng(seed)
    scale = np.array(shape) / (512, 512, 150)
    out = np.zeros(shape, np.uint8)
    for c, (centre, axes) in ORGANS.items():
        centre = np.array(centre) * scale + rng.normal(0, jitter, 3)
        axes = np.array(axes) * scale * (1 + rng.normal(0, jitter / 30, 3))
        box = tuple(
            slice(max(int(m - 1.3 * a), 0), min(int(m + 1.3 * a) + 1, s)) for m, a, s in zip(centre, axes, shape)
        )
        grid = np.ogrid[box]
        implicit = sum(((g - m) / a) ** 2 for g, m, a in zip(grid, centre, axes))
        size = implicit.shape
        noise = ndimage.zoom(rng.normal(0, 0.15, (8, 8, 6)), np.array(size) / (8, 8, 6), order=3)
        out[box][implicit + noise[: size[0], : size[1], : size[2]] < 1] = c
    for _ in range(blobs):
        c, r = rng.integers(1, 9), rng.integers(2, 6)
        x, y, z = (rng.integers(r, s - r) for s in shape)
        out[x - r : x + r, y - r : y + r, z - r : z + r] = c
    return out


def run_mgrad(pred_path: str, label_path: str, device: str = "cpu") -> tuple[float, float, dict, float]:
    import torch

    from mgrad import metrics
    from mgrad.metrics import surface

    pred, label = np.load(pred_path), np.load(label_path)
    if device == "cuda":
        pred, label = torch.as_tensor(pred).cuda(), torch.as_tensor(label).cuda()
        torch.cuda.synchronize()
    memory = PeakMemory(torch.device(device), above_start=True)
    start = time.perf_counter()
    result = metrics.case_metrics(pred, label, 9, SPACING)  # Dice, IoU, HD95 and ASD in mm and in voxels
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    surface.confusion(pred, label, 9)  # Dice of all classes (and IoU) from one confusion matrix
    dice_seconds = time.perf_counter() - start
    values = {(c, m): r[m] for c, r in result.items() for m in ("dice", *METRICS)}
    return seconds, dice_seconds, values, memory.mib()


def run_medpy(pred_path: str, label_path: str) -> tuple[float, float, dict, float]:
    import torch
    from medpy.metric import binary

    pred, label = np.load(pred_path), np.load(label_path)
    memory = PeakMemory(torch.device("cpu"))
    values, seconds, dice_seconds = {}, 0.0, 0.0
    for c in range(1, 9):
        p, g = pred == c, label == c
        start = time.perf_counter()
        values[c, "hd95"] = binary.hd95(p, g, voxelspacing=SPACING)
        values[c, "asd"] = binary.assd(p, g, voxelspacing=SPACING)
        seconds += time.perf_counter() - start
        start = time.perf_counter()
        values[c, "dice"] = binary.dc(p, g)
        dice_seconds += time.perf_counter() - start
    return seconds, dice_seconds, values, memory.mib()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 150))
    shape = tuple(parser.parse_args().shape)
    import torch

    print(machine_summary())
    start = time.perf_counter()
    label = organ_volume(shape, seed=0)
    pred = organ_volume(shape, seed=1, jitter=2.0, blobs=6)
    print(f"volume {shape}, spacing {SPACING} mm, built in {time.perf_counter() - start:.1f} s")
    print("voxels per class (label / prediction):", [(int((label == c).sum()), int((pred == c).sum())) for c in ORGANS])
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(Path(tmp) / "pred.npy"), str(Path(tmp) / "label.npy")]
        np.save(paths[0], pred)
        np.save(paths[1], label)
        jobs = [("mgrad (CPU)", run_mgrad, ()), ("medpy", run_medpy, ())]
        if torch.cuda.is_available():
            jobs.insert(1, ("mgrad (CUDA)", run_mgrad, ("cuda",)))
        for name, func, extra in jobs:
            runs[name] = in_fresh_process(func, *paths, *extra)  # a fresh process per method
    reference = runs["medpy"][2]
    print()
    print(f"{'method':<14}{'HD95+ASD s':>12}{'ratio':>8}{'Dice s':>9}{'ratio':>8}{'peak MiB':>10}{'max |diff|':>12}")
    for name, (seconds, dice_seconds, values, peak_mib) in runs.items():
        diff = max(abs(values[key] - reference[key]) for key in reference)
        ratio, dice_ratio = runs["medpy"][0] / seconds, runs["medpy"][1] / dice_seconds
        print(
            f"{name:<14}{seconds:>12.2f}{ratio:>7.1f}x{dice_seconds:>9.3f}{dice_ratio:>7.1f}x"
            f"{peak_mib:>10.0f}{diff:>12.1e}"
        )
    print(
        "\nmgrad's time covers Dice, IoU, HD95 and ASD in mm and in voxels; medpy's HD95+ASD only hd95 and assd in mm."
    )
    assert all(max(abs(v[k] - reference[k]) for k in reference) <= 1e-6 for _, _, v, _ in runs.values()), (
        "values differ"
    )


if __name__ == "__main__":
    main()
