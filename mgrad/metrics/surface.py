"""Surface-distance kernels: confusion counts, class bounding boxes, medpy's surface voxels, nearest distances.

Numpy/scipy on the CPU (a k-d tree for the nearest surface voxel), torch on CUDA tensors (an exact pairwise search);
never a full-volume distance transform.
"""

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

Volume = np.ndarray | torch.Tensor
_CROSS: dict[int, np.ndarray] = {}  # ndim -> connectivity-1 structuring element


def confusion(pred: Volume, label: Volume, num_classes: int) -> np.ndarray:
    """(C, C) voxel counts indexed [pred class, label class], from one bincount of pred * C + label."""
    n = num_classes
    if isinstance(pred, torch.Tensor):
        return torch.bincount((pred * n + label).reshape(-1), minlength=n * n).reshape(n, n).cpu().numpy()
    p, g = np.ravel(pred), np.ravel(label)
    counts = np.zeros(n * n, dtype=np.int64)
    chunk = 1 << 22  # bounds the int64 temporaries to 32 MiB each
    for start in range(0, p.size, chunk):
        counts += np.bincount(p[start : start + chunk].astype(np.intp) * n + g[start : start + chunk], minlength=n * n)
    return counts.reshape(n, n)


def boxes(pred: Volume, label: Volume, num_classes: int) -> dict[int, tuple[slice, ...]]:
    """Per class, the bounding box of prediction and label together (classes absent from both are left out)."""
    if isinstance(pred, torch.Tensor):
        boxes = {}
        for c in range(1, num_classes):
            mask = (pred == c) | (label == c)
            extent = [
                mask.any(dim=tuple(d for d in range(mask.ndim) if d != axis)).nonzero() for axis in range(mask.ndim)
            ]
            if len(extent[0]):
                boxes[c] = tuple(slice(int(e[0]), int(e[-1]) + 1) for e in extent)
        return boxes
    found = zip(ndimage.find_objects(pred, num_classes - 1), ndimage.find_objects(label, num_classes - 1))
    return {
        c: tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(p, g)) if p and g else (p or g)
        for c, (p, g) in enumerate(found, start=1)
        if p or g
    }


def surface_points(mask: Volume) -> Volume:
    """Coordinates (N, ndim) of the mask voxels that its connectivity-1 erosion removes (medpy's border)."""
    if isinstance(mask, np.ndarray):
        if mask.ndim not in _CROSS:
            _CROSS[mask.ndim] = ndimage.generate_binary_structure(mask.ndim, 1)
        return np.argwhere(mask & ~ndimage.binary_erosion(mask, structure=_CROSS[mask.ndim]))
    padded = torch.zeros([s + 2 for s in mask.shape], dtype=torch.bool, device=mask.device)  # outside is background
    core = tuple(slice(1, s + 1) for s in mask.shape)
    padded[core] = mask
    eroded = mask.clone()
    for axis in range(mask.ndim):
        for start in (0, 2):
            shifted = list(core)
            shifted[axis] = slice(start, start + mask.shape[axis])
            eroded &= padded[tuple(shifted)]
    return (mask & ~eroded).nonzero()


def nearest(points: Volume, targets: Volume) -> np.ndarray:
    """Euclidean distance from each point to its nearest target (float64 coordinates)."""
    if isinstance(points, np.ndarray):
        return cKDTree(targets).query(points, workers=-1)[0]
    step = max(1, (1 << 26) // len(targets))  # pairs per block: 512 MiB of float64
    return (
        torch.cat(
            [
                torch.cdist(points[i : i + step], targets, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
                for i in range(0, len(points), step)
            ]
        )
        .cpu()
        .numpy()
    )


def distance_metrics(pred: Volume, label: Volume, spacing: tuple[float, ...] | None) -> dict[str, float]:
    """HD95 and ASD (medpy ``hd95``/``assd``) in voxels and, with ``spacing``, in mm, from one surface extraction."""
    p, g = (surface_points(mask) for mask in (pred, label))
    p, g = (x.double() if isinstance(x, torch.Tensor) else x.astype(np.float64) for x in (p, g))
    out = dict(zip(("hd95_vox", "asd_vox"), hd95_asd(p, g)))
    if spacing is None:
        out["hd95"], out["asd"] = out["hd95_vox"], out["asd_vox"]
    else:
        scale = p.new_tensor(spacing) if isinstance(p, torch.Tensor) else np.asarray(spacing)
        out["hd95"], out["asd"] = hd95_asd(p * scale, g * scale)
    return out


def hd95_asd(p: Volume, g: Volume) -> tuple[float, float]:
    """95th percentile and mean of both directed surface distance sets together."""
    distances = np.concatenate([nearest(p, g), nearest(g, p)])
    return float(np.percentile(distances, 95)), float(distances.mean())
