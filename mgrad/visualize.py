"""Pictures: slices with ground truth and prediction overlaid in organ colours, and training curves (PNG)."""

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mgrad.writers import atomic_path

__all__ = ["ORGAN_COLOURS", "overlay_figure", "training_curves"]

# one colour per class index (background transparent); Synapse order: aorta, gallbladder, kidney L, kidney R, liver,
# pancreas, spleen, stomach; ACDC: rv, myo, lv take the first three
ORGAN_COLOURS = [
    (0.0, 0.0, 0.0),
    (0.90, 0.10, 0.10),
    (0.10, 0.75, 0.10),
    (0.10, 0.35, 0.95),
    (0.95, 0.85, 0.10),
    (0.85, 0.20, 0.85),
    (0.10, 0.85, 0.85),
    (1.00, 0.55, 0.10),
    (0.55, 0.35, 0.95),
]


def _label_cmap(num_classes: int) -> ListedColormap:
    colours = [ORGAN_COLOURS[i % len(ORGAN_COLOURS)] if i else (0, 0, 0) for i in range(num_classes)]
    return ListedColormap(colours)


def _busiest_slices(label: np.ndarray, pred: np.ndarray, count: int) -> list:
    """Indices of the ``count`` slices (last axis) with the most foreground, in order along the axis."""
    area = (label > 0).sum(axis=(0, 1)) + (pred > 0).sum(axis=(0, 1))
    order = np.argsort(-area, kind="stable")[:count]
    return sorted(int(i) for i in order if area[i] > 0) or [label.shape[-1] // 2]


def _display_window(image: np.ndarray, label: np.ndarray) -> tuple:
    """Grey levels around the labelled structures' intensities (so that organs stay visible in CT and MRI)."""
    values = image[label > 0] if (label > 0).any() else image
    lo, hi = np.percentile(values, [1, 99])
    margin = max(hi - lo, 1e-6)
    return lo - margin, hi + margin


def overlay_figure(
    image: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike,
    class_names: Sequence[str],
    title: str = "",
    num_slices: int = 3,
) -> str:
    """PNG of ``num_slices`` slices: the image, ground truth over it, prediction over it (the paper's Fig. 2 layout).

    ``image``, ``label`` and ``pred`` are ``(H, W, D)`` arrays on one grid; slices are taken along the last axis
    where there is the most foreground. Written atomically; returns the path.
    """
    num_classes = len(class_names) + 1
    cmap = _label_cmap(num_classes)
    slices = _busiest_slices(label, pred, num_slices)
    fig = Figure(figsize=(7.5, 2.5 * len(slices)))
    axes = fig.subplots(len(slices), 3, squeeze=False)
    lo, hi = _display_window(image, label)
    for row, z in zip(axes, slices):
        for ax, overlay, name in zip(row, (None, label, pred), ("image", "ground truth", "prediction")):
            ax.imshow(np.rot90(image[..., z]), cmap="gray", vmin=lo, vmax=hi)
            if overlay is not None:
                masked = np.ma.masked_equal(np.rot90(overlay[..., z]), 0)
                ax.imshow(masked, cmap=cmap, vmin=0, vmax=num_classes - 1, alpha=0.55, interpolation="nearest")
            ax.set_title(f"{name}, slice {z}", fontsize=8)
            ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(1, num_classes)]
    fig.legend(handles, class_names, loc="lower center", ncol=min(len(class_names), 4), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return _save_png(fig, path)


def training_curves(history: Mapping[str, Sequence[float | None]], path: str | os.PathLike) -> str:
    """PNG of the training loss and the validation mean Dice per epoch (``history``: ``epoch``, ``loss``,
    ``val_mean_dice`` lists, ``None`` where an epoch was not validated). Written atomically; returns the path."""
    epochs = np.asarray(history["epoch"])
    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_dice = fig.subplots(1, 2)
    ax_loss.plot(epochs, history["loss"], color="tab:blue")
    ax_loss.set(xlabel="epoch", ylabel="training loss (mean over passes)", title="loss")
    validated = [(e, d) for e, d in zip(epochs, history["val_mean_dice"]) if d is not None]
    if validated:
        ax_dice.plot(*zip(*validated), marker="o", color="tab:green")
    ax_dice.set(xlabel="epoch", ylabel="validation mean Dice", title="validation", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_png(fig, path)


def _save_png(fig: Figure, path: str | os.PathLike) -> str:
    """Render ``fig`` with the Agg canvas (matplotlib's global backend is left alone) and write it atomically."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return str(path)
