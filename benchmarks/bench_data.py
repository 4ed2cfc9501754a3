"""Data-layer speed: volume decode + preprocess time, and 2D slices/s drawn from cached volumes.

Run ``python benchmarks/bench_data.py [--size 96 --seconds 2]``.

Runs on the synthetic phantom in a temporary folder. Slice rates are single-threaded, as in DataLoader workers;
compare them with the model's rate (about 20 slices/s at 96x96 on a 2-core CPU at small width).
"""

import argparse
import tempfile
import time

import torch
from monai.data import CacheDataset

from mgrad.data import dataset_info, get_datalist
from mgrad.hardware import machine_summary
from mgrad.transforms import train_transforms, volume_transforms


def slices_per_second(items: list, seconds: float, copy_cache: bool, **kwargs) -> float:
    ds = CacheDataset(items, train_transforms("ct", **kwargs), progress=False, copy_cache=copy_cache)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += len(ds[n % len(ds)])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=96, help="in-plane network size")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_summary("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        items = get_datalist("synthetic", tmp, "training")
        chain = volume_transforms("ct", args.size, num_classes=dataset_info("synthetic")["num_classes"])
        start = time.perf_counter()
        for item in items:
            chain(item)
        print(f"load + preprocess: {(time.perf_counter() - start) / len(items) * 1e3:.1f} ms per 96x96x24 volume")
        for augment in (False, True):
            for num_samples in (1, 8):
                for copy_cache in (False, True):
                    rate = slices_per_second(
                        items,
                        args.seconds,
                        copy_cache,
                        spatial_size=args.size,
                        num_samples=num_samples,
                        pos_fraction=0.8,
                        augment=augment,
                    )
                    print(
                        f"slices/s  augment={augment!s:5}  num_samples={num_samples}  copy_cache={copy_cache!s:5}  "
                        f"{rate:8.0f}"
                    )


if __name__ == "__main__":
    main()
