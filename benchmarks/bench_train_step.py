"""Training-step speed and memory: one MGRADTrainer iteration (3 gated feedback passes, one optimizer step each),
full-size MGRAD-UNet (in 1, out 9, widths 64..1024), MGRADLoss (aggregated deep supervision), AdamW.

    python benchmarks/bench_train_step.py [--batch 2 --size 224 --steps 2 --configs plain amp amp+rfbckpt]

Every configuration runs in its own fresh process: ``--warmup`` iterations (oneDNN primitive creation, AdamW
state), then ``--steps`` timed iterations through ``MGRADTrainer.run``. "s/step" is the median timed iteration;
"CPU s/step" is the process's CPU time per step (all threads; steadier than wall time when other processes share
the cores); "peak MiB" is that process's peak resident memory during the run above its resident memory just before
(network, optimizer and data built; Linux /proc; on CUDA the peak allocated GPU memory). Ratios are against the
plain fp32 path measured in the same run. "first-step loss" is the mean of the three pass losses of the first
iteration (same seed, same data), so the configurations' numerics can be compared.

Configurations (combine with "+"): ``plain`` fp32; ``amp`` bfloat16 autocast on CPU (float16 + grad scaler on
CUDA), ``MGRADTrainer(amp=True)``; ``cl`` channels-last memory format (``channels_last=True``); ``ckpt``
activation checkpointing of every encoder stage, RFB and decoder (``MGRADUNet(checkpointing="all")``); ``rfbckpt``
of the receptive field blocks only (``MGRADUNet(checkpointing="rfb")``); ``selckpt`` selective checkpointing of
the blocks of ``ckpt``, the outputs of their 3x3 convolutions kept (``MGRADUNet(checkpointing="selective")``);
``fbsplit``/``fbautocast``:
``MGRADUNet(feedback_precision="split"/"autocast")`` in place of the default ``"full"`` (which part computes in float32
under ``amp``; see ``bench_feedback_precision.py``); ``bf16`` bfloat16 autocast on CUDA too (no gradient scaler);
``fused`` the fused AdamW (``torch.optim.AdamW(fused=True)``), which also skips a non-finite step on the device;
``unfusedloss`` the aggregated loss evaluated subset by subset through MONAI's ``DiceCELoss`` instead of its fused
form (``AggregatedLoss(fused=False)``); ``compile`` regional compilation (:func:`mgrad.networks.compile_regions`,
Inductor), ``cudagraphs`` the same in ``torch.compile``'s ``reduce-overhead`` mode (CUDA graphs). A compiled
configuration runs twice, each in a fresh process: "first step s" of the first run is the warm-up with a cold cache
(``--warmup`` should cover the compilation), "cached first step s" that of the second run, which compiles from
Inductor's on-disk cache.

Each iteration's time is printed as it ends. ``--json PATH`` writes the results (and the machine line) to a JSON
file, rewritten after each run of a configuration, so a run stopped by a time limit keeps what it finished.
``--exact-memory`` (CPU) fixes glibc's mmap threshold at 64 KiB in the configurations' processes
(``MALLOC_MMAP_THRESHOLD_``), so every tensor's memory is returned when it is freed and "peak MiB" follows the live
tensors closely (by default glibc keeps freed blocks of up to 32 MiB, and the peak varies by 10% from run to run);
the page faults this costs slow the steps, so compare its times only with each other.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PeakMemory, exact_memory, in_fresh_process, machine_summary  # noqa: E402

DEFAULT_CONFIGS = ("plain", "amp", "amp+rfbckpt", "amp+ckpt")


def make_batch(batch: int, size: int, classes: int = 9, seed: int = 0) -> dict:
    """An image and a label map of smooth blobs (coarse random labels, upsampled), so every class is present."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, classes, (batch, 1, 7, 7), generator=g).float()
    label = F.interpolate(coarse, size=(size, size), mode="nearest").long()
    image = label.float() / classes + 0.1 * torch.randn(label.shape, generator=g)
    return {"image": image, "label": label}


def build_trainer(config: str, batch: int, size: int, iterations: int, widths: dict | None = None):
    """An ``MGRADTrainer`` of ``config`` (see the module's docstring) over ``iterations`` copies of one batch, on
    CUDA where available; ``widths`` (``features``, ``rfb_channels``) default to the full-size network's."""
    import torch

    from mgrad.engines import MGRADTrainer
    from mgrad.losses import AggregatedLoss, MGRADLoss
    from mgrad.networks import MGRADUNet, compile_regions

    options = set(config.split("+"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    modes = {"ckpt": "all", "rfbckpt": "rfb", "selckpt": "selective"}
    checkpointing = next((mode for option, mode in modes.items() if option in options), "none")
    feedback_precision = "split" if "fbsplit" in options else "autocast" if "fbautocast" in options else "full"
    network = MGRADUNet(
        2, 1, 9, checkpointing=checkpointing, feedback_precision=feedback_precision, **(widths or {})
    ).to(device)
    if options & {"compile", "cudagraphs"}:
        compile_regions(network, mode="reduce-overhead" if "cudagraphs" in options else None)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4, weight_decay=1e-4, fused="fused" in options or None)
    loss = MGRADLoss()
    if "unfusedloss" in options:
        loss.side_loss = AggregatedLoss(loss.loss, fused=False)
    return MGRADTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[make_batch(batch, size)] * iterations,
        network=network,
        optimizer=optimizer,
        loss_function=loss,
        amp="amp" in options or "bf16" in options,
        amp_kwargs={"dtype": torch.bfloat16} if "bf16" in options else None,
        channels_last="cl" in options,
        decollate=False,
    )


def run_config(config: str, batch: int, size: int, warmup: int, steps: int, threads: int) -> dict:
    import torch
    from ignite.engine import Events

    if threads:
        torch.set_num_threads(threads)
    trainer = build_trainer(config, batch, size, warmup + steps)
    device = trainer.state.device
    times, cpu_times, losses = [], [], []

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def started(engine) -> None:
        sync()
        times.append(-time.perf_counter())
        cpu_times.append(-time.process_time())

    def completed(engine) -> None:
        sync()
        times[-1] += time.perf_counter()
        cpu_times[-1] += time.process_time()
        losses.append(engine.state.pass_losses.mean().item())
        # as it happens: a run stopped from outside (a time limit) still shows how far each configuration got
        print(f"    {config}: iteration {engine.state.iteration}: {times[-1]:.2f} s", flush=True)

    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    memory = PeakMemory(device)
    trainer.run()
    peak = memory.mib()
    return {
        "seconds": statistics.median(times[warmup:]),
        "cpu_seconds": statistics.median(cpu_times[warmup:]),
        "all_seconds": times,
        "peak_mib": peak,
        "loss": losses[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="in-plane size (a multiple of 16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--steps", type=int, default=2, help="timed iterations (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--exact-memory", action="store_true", help="peak memory of live tensors (CPU; see above)")
    args = parser.parse_args()
    if args.exact_memory:
        exact_memory()
    configs = ["plain", *[c for c in args.configs if c != "plain"]]
    print(machine_summary(threads=args.threads))
    print(
        f"MGRADTrainer iteration: 3 feedback passes (3 optimizer steps), batch {args.batch}, "
        f"{args.size}x{args.size}, full-size MGRAD-UNet, MGRADLoss, AdamW; "
        f"{args.warmup} warm-up + {args.steps} timed iterations per configuration, each in a fresh process"
    )
    results = {}
    summary = {"machine": machine_summary(threads=args.threads), "batch": args.batch, "size": args.size}

    def save() -> None:
        """The results so far, replaced in one step: a run stopped from outside keeps every finished run."""
        if args.json:
            from mgrad.writers import write_json

            write_json(args.json, {**summary, "configs": results}, indent=1)

    for config in configs:
        results[config] = in_fresh_process(
            run_config, config, args.batch, args.size, args.warmup, args.steps, args.threads
        )
        r = results[config]
        save()
        if {"compile", "cudagraphs"} & set(config.split("+")):
            again = in_fresh_process(run_config, config, args.batch, args.size, args.warmup, args.steps, args.threads)
            r["cached_first_step_seconds"] = again["all_seconds"][0]
            save()
        steps = ", ".join(f"{t:.2f}" for t in r["all_seconds"])
        cached = r.get("cached_first_step_seconds")
        cached = "" if cached is None else f"; cached first step {cached:.1f} s"
        print(f"  {config}: {steps} s; peak {r['peak_mib']:.0f} MiB{cached}", flush=True)
    plain = results["plain"]
    print()
    print(
        f"{'configuration':<16}{'s/step':>9}{'speed-up':>10}{'CPU s/step':>12}{'CPU speed-up':>14}"
        f"{'peak MiB':>10}{'memory':>8}{'first-step loss':>17}"
    )
    for config, r in results.items():
        print(
            f"{config:<16}{r['seconds']:>9.2f}{plain['seconds'] / r['seconds']:>9.2f}x{r['cpu_seconds']:>12.2f}"
            f"{plain['cpu_seconds'] / r['cpu_seconds']:>13.2f}x{r['peak_mib']:>10.0f}"
            f"{r['peak_mib'] / plain['peak_mib']:>8.2f}{r['loss']:>17.5f}"
        )
    print("\nCPU s/step: the process's CPU time (all threads) per step; on a loaded machine steadier than wall time.")


if __name__ == "__main__":
    main()
