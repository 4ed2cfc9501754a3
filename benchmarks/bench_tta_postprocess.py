"""Effect of test-time augmentation and connected-component post-processing on a trained model's validation scores.

    python benchmarks/bench_tta_postprocess.py --ckpt models/model.pt --dataset acdc_h5 --dataset_dir DIR \
        [--preset small --split validation]

Every validation volume is segmented three ways, plain, ``--tta flip`` and ``--tta rot90``
(:class:`mgrad.ensemble.SoftmaxEnsemble` inside ``VolumeSliceInferer``), each then scored as it is and after
post-processing (:mod:`mgrad.postprocess`). So that the post-processing is never chosen on the cases it is scored on,
the patients are split in two halves: the rules chosen on one half are applied to the other (two-fold). Printed: mean
Dice % and HD95 (in mm, or voxels where the files store no spacing) over the foreground classes, and per class.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine_summary  # noqa: E402

PRESETS = {"small": ((16, 32, 64, 128, 256), 16, 96), "paper": ((64, 128, 256, 512, 1024), 64, 224)}


def segment(items, network, preset, spatial_size, tta, device, info):
    import numpy as np
    import torch
    from monai.data import MetaTensor

    from mgrad.data.loading import load_ras, relabel
    from mgrad.ensemble import SoftmaxEnsemble
    from mgrad.inferers import VolumeSliceInferer
    from mgrad.transforms import volume_transforms
    from mgrad.transforms.invert import InvertLabelsd

    pre = volume_transforms(info["preset"], spatial_size, with_label=False)
    inferer = VolumeSliceInferer((spatial_size, spatial_size), sw_batch_size=32, fast=False)
    model = SoftmaxEnsemble(network, tta=tta).eval()
    out = []
    for item in items:
        data = pre({"image": item["image"]})
        with torch.inference_mode():
            logits = inferer(data["image"][None].to(device), model)[0].cpu()
        labels = InvertLabelsd(pre)({"pred": MetaTensor(logits), "image": data["image"]})["pred"]
        gt = load_ras(item["label"], "label")
        spacing = tuple(float(s) for s in np.linalg.norm(gt.affine.numpy()[:3, :3], axis=0))
        gt = relabel(gt.numpy()[0].round().astype(np.int64), info["label_map"])
        out.append((labels.numpy()[0].astype(np.uint8), gt.astype(np.uint8), spacing))
    return out


def scores(cases, num_classes):
    import numpy as np

    from mgrad import metrics

    per = [metrics.case_metrics(p, g, num_classes, s) for p, g, s in cases]
    dice = {c: np.nanmean([r[c]["dice"] for r in per]) for c in range(1, num_classes)}
    hd95 = {c: np.nanmean([r[c]["hd95"] for r in per]) for c in range(1, num_classes)}
    return dice, hd95


def postprocessed(cases, patients, num_classes):
    """Rules chosen on the cases of one half of the patients, applied to the other half, and vice versa."""
    import torch

    from mgrad.postprocess import apply_rules, choose_rules

    names = sorted(set(patients))
    halves = [set(names[0::2]), set(names[1::2])]
    out = list(cases)
    for choose_on, apply_to in (halves, halves[::-1]):
        rules, _ = choose_rules([c for c, p in zip(cases, patients) if p in choose_on], num_classes)
        for i, (case, patient) in enumerate(zip(cases, patients)):
            if patient in apply_to:
                p, g, s = case
                out[i] = (apply_rules(torch.as_tensor(p)[None], rules, s).numpy()[0], g, s)
    return out


def main() -> None:
    import torch

    from mgrad.data import dataset_info, get_datalist
    from mgrad.data.folds import patient_id
    from mgrad.ensemble import load_networks
    from mgrad.networks import MGRADUNet

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--dataset", default="acdc_h5")
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()
    print(machine_summary())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = dataset_info(args.dataset, args.dataset_dir)
    features, rfb, spatial_size = PRESETS[args.preset]
    network = MGRADUNet(2, 1, info["num_classes"], features=features, rfb_channels=rfb).to(device)
    network = load_networks(network, args.ckpt, device)[0].eval()
    items = get_datalist(args.dataset, args.dataset_dir, args.split)
    patients = [patient_id(item) for item in items]
    print(f"{args.dataset} {args.split}: {len(items)} volumes of {len(set(patients))} patients; preset {args.preset}")
    names = info["class_names"]
    print(f"{'inference':<24} {'Dice %':>7} {'HD95':>7}  " + "  ".join(f"{n:>13}" for n in names) + "   seconds")
    for tta in ("none", "flip", "rot90"):
        t = time.perf_counter()
        cases = segment(items, network, args.preset, spatial_size, tta, device, info)
        seconds = time.perf_counter() - t
        for label, rows in (
            (tta, cases),
            (f"{tta} + postprocess", postprocessed(cases, patients, info["num_classes"])),
        ):
            dice, hd95 = scores(rows, info["num_classes"])
            mean_dice, mean_hd = sum(dice.values()) / len(dice), sum(hd95.values()) / len(hd95)
            cells = "  ".join(f"{100 * dice[c]:6.2f}/{hd95[c]:6.2f}" for c in dice)
            print(f"{label:<24} {100 * mean_dice:7.2f} {mean_hd:7.2f}  {cells}   {seconds:.1f}")


if __name__ == "__main__":
    main()
