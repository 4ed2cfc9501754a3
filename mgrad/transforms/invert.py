"""Network output -> labels (and probabilities) in each input's original geometry, one class channel at a time.

Inverting all class channels of a large volume at once holds every channel at full resolution in float32 (a
512x512x600 CT with 9 classes: 5.7 GB). :class:`InvertLabelsd` undoes only the last resampling of the preprocessing
(the in-plane resize) on one float channel at a time, keeping a running maximum, takes the argmax, and undoes the
operations before it (the reorientation) on the ``uint8`` labels; the peak stays near two full-resolution float32
channels whatever the number of classes, and the labels are the argmax of the inverted outputs wherever those earlier
operations only permute and flip axes (as ``Orientationd`` does). The bundle's in-plane resize is undone slice by slice
with a 2D kernel: MONAI's trilinear values to within a float32 rounding (one step in some sizes, none in others),
in 0.37 of the time on a CPU (an ACDC volume with 4 classes: 15.6 against 35.2 ms, one thread, labels only).
"""

from collections.abc import Hashable, Iterator, Mapping
from copy import deepcopy
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, InvertibleTransform, Transform
from monai.transforms.utils import convert_applied_interp_mode

from mgrad.writers import PROBABILITY_SCALE

__all__ = ["InvertLabelsd"]


class InvertLabelsd(Transform):
    """Maps ``data[key]``, network outputs ``(C, h, w, D)`` on the preprocessed grid of ``data[orig_key]``, back to
    the original geometry (inverting ``transform``) as ``uint8`` labels ``(1, H, W, D)``; optionally also stores the
    softmax probabilities there under ``prob_key``.

    Labels are the argmax of the inverted outputs (interpolated as the preprocessing resampled the image), computed
    one channel at a time: the last invertible transform of ``transform`` (the resize) is undone on each float
    channel, the earlier ones (the reorientation; by nearest neighbour) on the ``uint8`` labels and ``uint16``
    probabilities. With ``prob_key`` the probabilities, the softmax of the inverted outputs, are stored as
    ``uint16`` steps of ``1 / PROBABILITY_SCALE`` (write them with :class:`mgrad.writers.AtomicProbabilityWriter`)
    and the labels are the argmax of those stored values (the first class on a tie), so that a reader of both files
    finds them consistent; each channel is then inverted twice. ``argmax_first=True`` takes the argmax on the
    network's grid and inverts the labels with nearest-neighbour interpolation instead (the TransUNet evaluation
    protocol; cheaper, blockier); probabilities are not available that way.

    Args:
        transform: the invertible preprocessing that produced ``data[orig_key]``.
        key: the network output to invert; replaced by the labels.
        orig_key: the preprocessed input whose applied operations are inverted.
        prob_key: where to store the probabilities ``(C, H, W, D)`` ``uint16``; ``None``: labels only.
        argmax_first: argmax before inversion (labels only).
        slab: slices inverted together where the resize kept the slice axis (as the bundle's in-plane resize does).

    Returns:
        ``__call__(data)``: a copy of ``data`` with ``data[key]`` the labels (``MetaTensor`` ``uint8``
        ``(1, H, W, D)`` with the original affine) and, with ``prob_key``, the probabilities.

    Example:
        >>> post = InvertLabelsd(preprocessing, prob_key="prob")  # doctest: +SKIP
        >>> out = post({"pred": logits, "image": preprocessed_image})  # doctest: +SKIP
    """

    def __init__(
        self,
        transform: InvertibleTransform,
        key: str = "pred",
        orig_key: str = "image",
        prob_key: str | None = None,
        argmax_first: bool = False,
        slab: int = 32,
    ) -> None:
        if argmax_first and prob_key is not None:
            raise ValueError("argmax_first gives labels only: set prob_key=None or argmax_first=False")
        self.key, self.orig_key, self.prob_key, self.argmax_first = key, orig_key, prob_key, argmax_first
        self.slab = slab
        steps = transform.flatten().transforms if isinstance(transform, Compose) else (transform,)
        invertible = [t for t in steps if isinstance(t, InvertibleTransform)]
        self.invert_last = Invertd(
            key, Compose(invertible[-1:]), orig_keys=orig_key, nearest_interp=False, to_tensor=True
        )
        self.earlier = Compose(invertible[:-1]) if len(invertible) > 1 else None  # None: nothing before the last
        self.invert_nearest = Invertd(key, transform, orig_keys=orig_key, nearest_interp=True, to_tensor=True)

    def _inverted(self, data: Mapping[Hashable, Any], channels: torch.Tensor, nearest: bool = False) -> MetaTensor:
        """``channels`` with the last resampling undone (``nearest``: all operations, by nearest neighbour)."""
        invert = self.invert_nearest if nearest else self.invert_last
        # a copy: where the resampling was the identity the result is this tensor, which the caller changes in place
        channels = MetaTensor(torch.as_tensor(channels).clone())  # Invertd takes the operations from orig_key
        return invert({self.key: channels, self.orig_key: data[self.orig_key]})[self.key]

    def _undo_earlier(self, values: torch.Tensor, like: MetaTensor) -> MetaTensor:
        """``values`` on the grid of ``like`` (a channel with the last resampling undone) with the operations
        before it undone too, by nearest neighbour."""
        image = MetaTensor(values, meta=deepcopy(like.meta))
        image.applied_operations = convert_applied_interp_mode(deepcopy(like.applied_operations), mode="nearest")
        return image if self.earlier is None else self.earlier.inverse({self.orig_key: image})[self.orig_key]

    def _channels(self, data: Mapping[Hashable, Any], pred: torch.Tensor, first: list | None) -> Iterator:
        """Each class channel with the last resampling undone, as ``(index, float32 (1, h', w', d') tensor)``;
        ``first`` (where given) gets the first channel's MetaTensor header (meta data and operations left to undo).

        An in-plane resize (:func:`_in_plane_size`) is undone slice by slice with a 2D bilinear kernel (MONAI's
        trilinear kernel weighs the kept slice axis by 1 and 0, so the two differ by float32 rounding only); MONAI's
        inversion then runs on one slice only, for the header."""
        size = _in_plane_size(data[self.orig_key], pred.shape[-1])
        for c in range(pred.shape[0]):
            if size is None:
                channel = self._inverted(data, pred[c : c + 1])
                if c == 0 and first is not None:
                    first.append(_header(channel))
                yield c, channel.as_tensor().float()
                continue
            if c == 0 and first is not None:
                first.append(_header(self._inverted(_with_depth(data, self.orig_key, 1), pred[:1, ..., :1])))
            slices = pred[c : c + 1].float().permute(3, 0, 1, 2).contiguous()  # (d', 1, h, w)
            yield c, F.interpolate(slices, size=size, mode="bilinear").permute(1, 2, 3, 0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        pred = d[self.key]
        if self.argmax_first:
            labels = torch.argmax(torch.as_tensor(pred), dim=0, keepdim=True).to(torch.uint8)
            d[self.key] = self._inverted(d, labels, nearest=True).round().to(torch.uint8)
            return d
        first: list = []
        labels = probs = None
        for part, zs in self._slabs(d, pred):
            slab_labels, slab_probs = (
                (self._argmax(part, pred[..., zs], first), None)
                if self.prob_key is None
                else self._probabilities(part, pred[..., zs], first)
            )
            if labels is None:  # the inverted depth: that of the network's grid where it was undone slab by slab
                depth = slab_labels.shape[-1] if zs == slice(None) else pred.shape[-1]
                labels = torch.empty((*slab_labels.shape[:-1], depth), dtype=torch.uint8)
                if slab_probs is not None:
                    probs = torch.empty((*slab_probs.shape[:-1], depth), dtype=torch.uint16)
            labels[..., zs] = slab_labels.cpu()  # the whole volume's labels in host memory, for the writer
            if probs is not None:
                probs[..., zs] = slab_probs
        if probs is not None:
            probs = self._undo_earlier(probs, first[0])
            d[self.prob_key] = MetaTensor(probs.as_tensor().contiguous(), meta=probs.meta)
        labels = self._undo_earlier(labels, first[0])
        d[self.key] = MetaTensor(labels.as_tensor().contiguous(), meta=labels.meta)
        return d

    def _slabs(self, d: dict, pred: torch.Tensor) -> list[tuple[dict, slice]]:
        """``(data, slice of the slice axis)`` per slab of ``self.slab`` slices where the last operation is a
        ``Resize`` that kept the slice axis (undoing it slab by slab is then exact), else the whole volume once."""
        depth = pred.shape[-1]
        if _resize_keeping_depth(d[self.orig_key], depth) is None:
            return [(d, slice(None))]
        slabs = [slice(z0, min(z0 + self.slab, depth)) for z0 in range(0, depth, self.slab)]
        return [(_with_depth(d, self.orig_key, zs.stop - zs.start), zs) for zs in slabs]

    def _argmax(self, d: dict, pred: torch.Tensor, first: list) -> torch.Tensor:
        for c, channel in self._channels(d, pred, first):
            if c == 0:
                best, labels = channel, torch.zeros_like(channel, dtype=torch.uint8)
                continue
            _take_larger(labels, channel > best, c)
            torch.maximum(best, channel, out=best)
        return labels

    def _probabilities(self, d: dict, pred: torch.Tensor, first: list) -> tuple[torch.Tensor, torch.Tensor]:
        # first pass: running maximum and running sum of exponentials (rescaled as the maximum grows)
        for c, channel in self._channels(d, pred, first):
            if c == 0:
                top, total = channel, torch.ones_like(channel)
                continue
            new_top = torch.maximum(top, channel)
            total.mul_(top.sub_(new_top).exp_()).add_(channel.sub_(new_top).exp_())
            top = new_top
        # second pass: quantised probabilities, and labels as the argmax of the stored steps (exact in float32)
        probs = torch.empty((pred.shape[0], *top.shape[1:]), dtype=torch.uint16)
        labels = torch.zeros_like(top, dtype=torch.uint8)
        for c, channel in self._channels(d, pred, None):
            steps = channel.sub_(top).exp_().div_(total).mul_(PROBABILITY_SCALE).round_()
            probs[c : c + 1] = steps.cpu().to(torch.uint16)  # (uint16 has few operations on a GPU)
            if c == 0:
                best = steps
                continue
            _take_larger(labels, steps > best, c)
            torch.maximum(best, steps, out=best)
        return labels, probs


def _take_larger(labels: torch.Tensor, larger: torch.Tensor, c: int) -> None:
    """``labels`` set to ``c`` where ``larger``, in place: every label so far is below ``c``, so that is their maximum
    with ``larger * c`` (several times faster on a CPU than ``masked_fill_`` on ``uint8``)."""
    torch.maximum(labels, larger.to(torch.uint8).mul_(c), out=labels)


def _header(channel: MetaTensor) -> MetaTensor:
    """A one-element MetaTensor with the meta data and the operations left to undo of ``channel``."""
    return MetaTensor(torch.zeros(1), meta=channel.meta, applied_operations=channel.applied_operations)


def _resize_keeping_depth(orig: Any, depth: int) -> dict[str, Any] | None:
    """The last operation applied to ``orig`` where it is a ``Resize`` that kept the ``depth`` slices; else ``None``."""
    ops = list(getattr(orig, "applied_operations", []))
    if not ops or ops[-1].get("class") != "Resize" or int(ops[-1]["orig_size"][-1]) != depth:
        return None
    return ops[-1]


def _in_plane_size(orig: Any, depth: int) -> tuple[int, int] | None:
    """``(H, W)`` where the last operation applied to ``orig`` is MONAI's linear ``Resize`` in float32 of a
    ``(C, H, W, depth)`` volume that kept its ``depth`` slices (the bundle's in-plane resize); else ``None``."""
    op = _resize_keeping_depth(orig, depth)
    if op is None:
        return None
    size, extra = tuple(int(n) for n in op["orig_size"]), op.get("extra_info", {})
    linear = extra.get("mode") in ("bilinear", "trilinear") and extra.get("align_corners") in (None, "none", False)
    if len(size) != 3 or not linear or str(extra.get("dtype")) not in ("float32", "torch.float32"):
        return None
    return size[0], size[1]


def _with_depth(data: Mapping[Hashable, Any], orig_key: str, depth: int) -> dict[Hashable, Any]:
    """``data`` with ``orig_key`` a header whose last operation, a resize that kept the slice axis
    (:func:`_resize_keeping_depth`), is that of ``depth`` slices: a slab of them, or one slice."""
    orig = data[orig_key]
    ops = list(orig.applied_operations)
    op = deepcopy(ops[-1])
    op["orig_size"] = (*tuple(op["orig_size"])[:-1], depth)
    return {**data, orig_key: MetaTensor(torch.zeros(1), meta=orig.meta, applied_operations=[*ops[:-1], op])}
