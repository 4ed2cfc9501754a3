"""The aggregated loss's speed and memory: fused against MONAI's ``DiceCELoss`` subset by subset.

    python benchmarks/bench_loss.py [--batch 2 --classes 9 --size 224 --maps 5 --repeats 5 --threads 0 --json PATH]
        [--exact-memory]

One call is the loss of MGRAD-UNet's side maps (``AggregatedLoss(default_segmentation_loss(squared_pred=True))``,
the paper preset's loss: 31 subsets for 5 maps), forward and backward. ``fused`` is the default
(:func:`mgrad.losses.aggregated_dice_ce.aggregated_dice_ce`), ``unfused`` the same loss with ``fused=False``
(``DiceCELoss`` on each subset sum). Each form runs in its own fresh process: one untimed call, then ``--repeats``
timed calls (the median is reported); "peak MiB" is the peak memory during the timed calls above the memory before
them (the process's resident memory; on CUDA allocated GPU memory). The two forms' values are printed, so their
agreement can be read off. ``--json PATH`` writes the results (and the machine line) to a JSON file.
``--exact-memory`` (CPU): the peak of live tensors, as in
``bench_train_step.py`` (glibc otherwise keeps freed blocks, which the unfused form's many small tensors reuse
unseen); its page faults slow both forms, so compare its times only with each other.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from common import PeakMemory, exact_memory, in_fresh_process, machine_summary


def run_form(fused: bool, batch: int, classes: int, size: int, maps: int, repeats: int, threads: int) -> dict:
    import torch

    from mgrad.losses import AggregatedLoss
    from mgrad.losses.mgrad_loss import default_segmentation_loss

    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator().manual_seed(0)
    side_maps = torch.randn(maps, batch, classes, size, size, generator=generator).to(device).requires_grad_()
    target = torch.randint(0, classes, (batch, 1, size, size), generator=generator).to(device)
    loss = AggregatedLoss(default_segmentation_loss(squared_pred=True), fused=fused)

    def call() -> float:
        side_maps.grad = None
        value = loss(side_maps, target)
        value.backward()
        return value.item()

    value = call()
    memory = PeakMemory(device, above_start=True)  # what the loss adds: the maps and targets are there before it
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    peak = memory.mib()
    return {"seconds": statistics.median(times), "all_seconds": times, "peak_mib": peak, "loss": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--maps", type=int, default=5, help="side maps (2**maps - 1 subsets)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--exact-memory", action="store_true", help="peak memory of live tensors (CPU; see above)")
    args = parser.parse_args()
    if args.exact_memory:
        exact_memory()
    machine = machine_summary(threads=args.threads)
    print(machine)
    print(
        f"aggregated DiceCE over {2**args.maps - 1} subsets of {args.maps} maps, batch {args.batch}, "
        f"{args.classes} classes, {args.size}x{args.size}, forward + backward"
    )
    results = {
        name: in_fresh_process(
            run_form, name == "fused", args.batch, args.classes, args.size, args.maps, args.repeats, args.threads
        )
        for name in ("unfused", "fused")
    }
    print(f"{'form':<8}{'ms/call':>10}{'speed-up':>10}{'peak MiB':>10}{'memory':>8}  loss")
    for name, r in results.items():
        speed = results["unfused"]["seconds"] / r["seconds"]
        memory = r["peak_mib"] / results["unfused"]["peak_mib"]
        line = f"{name:<8}{r['seconds'] * 1e3:>10.1f}{speed:>9.2f}x{r['peak_mib']:>10.0f}{memory:>8.2f}"
        print(f"{line}  {r['loss']:.6f}")
    if args.json:
        settings = {name: value for name, value in vars(args).items() if name != "json"}
        args.json.write_text(json.dumps({"machine": machine, "settings": settings, **results}))


if __name__ == "__main__":
    main()
