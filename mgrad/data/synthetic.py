"""A synthetic abdominal CT phantom: NIfTI volumes, labels and a decathlon-style ``dataset.json``.

Each case is a CT-like body (air, fat rim, soft tissue) holding the eight Synapse organs with their Synapse label
values, of different size, shape, intensity and texture: 1 aorta (thin tube), 2 gallbladder (small, close to soft
tissue in HU), 3 left and 4 right kidney (beans with a brighter cortex), 5 liver (large, deformed), 6 pancreas (thin,
curved, close to liver and spleen in HU), 7 spleen, 8 stomach (fluid-filled with a gas pocket). Intensities overlap
(liver/spleen/pancreas, kidney cortex/aorta, gallbladder/stomach/soft tissue), sizes and positions vary by case, a
few end slices hold no structure, and noise, texture and a bias field are added. Volumes are stored with anisotropic
spacing and a non-identity affine (x and y flipped as DICOM-derived NIfTI often are, an oblique in-plane rotation, an
origin offset).
"""

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from mgrad.data.classes import SYNAPSE_CLASSES
from mgrad.writers import atomic_path, write_json

AORTA, GALLBLADDER, KIDNEY_LEFT, KIDNEY_RIGHT, LIVER, PANCREAS, SPLEEN, STOMACH = range(1, 9)
# mean and texture amplitude (HU) of each organ; liver, spleen and pancreas overlap, so do kidney cortex and aorta
ORGAN_HU = {
    AORTA: (185, 18),
    GALLBLADDER: (15, 10),
    KIDNEY_LEFT: (170, 14),
    KIDNEY_RIGHT: (170, 14),
    LIVER: (60, 10),
    PANCREAS: (45, 12),
    SPLEEN: (48, 10),
    STOMACH: (25, 12),
}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: Sequence[float]) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def _ellipsoid(grid: np.ndarray, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Squared normalised distance to ``center`` (< 1 inside); ``grid`` is (3, H, W, D) in mm."""
    return sum(((grid[a] - center[a]) / radii[a]) ** 2 for a in range(3))


def make_case(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: ``(image int16 HU, label uint8)`` on a ``shape`` voxel grid with ``spacing`` mm."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # mm, centred
    u = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
    smooth = _smooth_noise(rng, shape, (5 / spacing[0], 5 / spacing[1], 5 / spacing[2]))
    label = np.zeros(shape, np.uint8)
    hu = np.full(shape, -1000.0)

    ax, ay = u(30, 36), u(25, 30)
    body = (grid[0] / ax) ** 2 + (grid[1] / ay) ** 2 + 0.04 * smooth
    hu[body < 1] = -90  # fat
    hu[body < 0.75] = 40  # soft tissue

    # the patient's right is -x on this grid (the liver's side)
    liver = _ellipsoid(grid, (u(-14, -8), u(-9, -3), u(4, 12)), (u(14, 18), u(11, 15), u(18, 24))) + 0.3 * smooth
    label[liver < 1] = LIVER
    stomach = _ellipsoid(grid, (u(8, 13), u(-12, -7), u(6, 14)), (u(7, 10), u(6, 8), u(8, 12))) + 0.2 * smooth
    label[stomach < 1] = STOMACH
    gas = (stomach < 1) & (grid[1] < -12 - u(0, 3)) & (grid[2] > 8)  # gas rises anteriorly
    spleen = _ellipsoid(grid, (u(14, 19), u(6, 12), u(6, 14)), (u(5, 7), u(7, 10), u(9, 13)))
    label[spleen < 1] = SPLEEN
    t = grid[0] / 18.0  # pancreas: a thin curved band from the duodenum (patient's right) to the spleen
    band = (grid[1] - (u(0, 3) - 5 * np.cos(1.3 * t))) ** 2 / u(2.2, 3.2) ** 2 + (grid[2] - u(-2, 2)) ** 2 / 16
    label[(band < 1) & (np.abs(grid[0] + u(-2, 2)) < u(14, 18))] = PANCREAS
    kz, medulla = u(-14, -6), np.zeros(shape, bool)
    for side, cls in ((-1, KIDNEY_RIGHT), (1, KIDNEY_LEFT)):
        center = (side * u(13, 17), u(12, 16), kz + u(-2, 2))
        kidney = _ellipsoid(grid, center, (u(4, 5.5), u(6, 8), u(9, 12)))
        hilum = _ellipsoid(grid, (center[0] - side * 5, center[1] - 2, center[2]), (3, 3, 5))
        label[(kidney < 1) & (hilum >= 1)] = cls
        medulla |= (kidney < 0.45) & (hilum >= 1)
    z_top, radius = u(14, 26), u(2.5, 4)
    aorta_x = u(-1, 3) + 1.5 * np.sin(grid[2] / u(12, 20))
    aorta = ((grid[0] - aorta_x) ** 2 + (grid[1] - u(10, 13)) ** 2 < radius**2) & (grid[2] > -22) & (grid[2] < z_top)
    label[aorta] = AORTA
    gall = _ellipsoid(grid, (u(-8, -2), u(-15, -11), u(-2, 6)), (u(3, 4.5), u(2.5, 3.5), u(4, 7)))
    label[gall < 1] = GALLBLADDER

    texture = _smooth_noise(rng, shape, (1.5, 1.5, 0.6))
    for cls, (mean, std) in ORGAN_HU.items():
        hu[label == cls] = mean + std * texture[label == cls]
    medulla &= (label == KIDNEY_LEFT) | (label == KIDNEY_RIGHT)
    hu[medulla] = 125 + 14 * texture[medulla]  # kidney medulla, darker than the cortex
    hu[gas] = -700 + 60 * texture[gas]
    hu[label == 0] += 12 * texture[label == 0] * (hu[label == 0] > -500)
    hu = hu * (1 + 0.05 * smooth) + rng.normal(0, 15, shape)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), label


def case_affine(rng: np.random.Generator, spacing: Sequence[float]) -> np.ndarray:
    """Flipped x/y (DICOM-derived NIfTI), oblique in-plane rotation of 5-15 degrees, origin offset; mm per voxel."""
    theta = np.deg2rad(rng.uniform(5, 15))
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = [rng.uniform(30, 60), rng.uniform(150, 200), rng.uniform(-400, -300)]
    return affine


def make_dataset(
    out_dir: str,
    num_cases: int = 8,
    shape: Sequence[int] = (96, 96, 24),
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    seed: int = 0,
) -> str:
    """Write ``num_cases`` phantoms to ``out_dir/{imagesTr,labelsTr}`` and return the path of ``dataset.json``.

    A quarter of the cases (at least one) form the ``validation`` list, the rest ``training``; the phantom has no
    held-out test set, so ``test`` repeats ``validation``. Deterministic for a given ``seed``.
    """
    if num_cases < 2:
        raise ValueError(f"num_cases must be at least 2 (training and validation), got {num_cases}")
    out, shape = Path(out_dir), tuple(int(s) for s in shape)
    items = []
    for case in range(num_cases):
        rng = np.random.default_rng([seed, case])
        image, label = make_case(rng, shape, spacing)
        affine = case_affine(rng, spacing)
        name = f"case_{case:03d}.nii.gz"
        for folder, array in (("imagesTr", image), ("labelsTr", label)):
            img = nib.Nifti1Image(array, affine)
            img.header.set_xyzt_units("mm", "sec")
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            with atomic_path(out / folder / name) as tmp:
                nib.save(img, tmp)
        items.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    num_val = max(1, num_cases // 4)
    meta = {
        "name": "mgrad-synthetic-phantom",
        "description": "Synthetic abdominal CT phantom (mgrad.data.synthetic)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(i + 1): n for i, n in enumerate(SYNAPSE_CLASSES)}},
        "numTraining": num_cases - num_val,
        "seed": seed,
        "training": items[:-num_val],
        "validation": items[-num_val:],
        "test": items[-num_val:],
    }
    path = out / "dataset.json"
    write_json(path, meta)
    return str(path)
