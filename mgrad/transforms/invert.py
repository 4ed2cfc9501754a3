"""Network output -> labels (and probabilities) in each input's original geometry, one class channel at a time.

Inverting all class channels of a large volume at once holds every channel at full resolution in float32 (a
512x512x600 CT with 9 classes: 5.7 GB). :class:`InvertLabelsd` undoes only the last resampling of the preprocessing
(the in-plane resize) on one float channel at a time, keeping a running maximum, takes the argmax, and undoes the
operations before it (the reorientation) on the ``uint8`` labels; the peak stays near two full-resolution float32
channels whatever the number of classes, and the labels are exactly the argmax of the inverted outputs wherever
those earlier operations only permute and flip axes (as ``Orientationd`` does).
"""

from collections.abc import Hashable, Iterator, Mapping
from copy import deepcopy
from typing import Any

import torch
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
        self.earlier = Compose(invertible[:-1])
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
        return self.earlier.inverse({self.orig_key: image})[self.orig_key]

    def _channels(self, data: Mapping[Hashable, Any], pred: torch.Tensor, first: list) -> Iterator:
        """Each class channel with the last resampling undone, as ``(index, float32 (1, h', w', d') tensor)``;
        ``first`` gets the first channel's MetaTensor header (meta data and operations left to undo)."""
        for c in range(pred.shape[0]):
            channel = self._inverted(data, pred[c : c + 1])
            if c == 0:
                ops = channel.applied_operations
                first.append(MetaTensor(torch.zeros(1), meta=channel.meta, applied_operations=ops))
            yield c, channel.as_tensor().float()

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
            if labels is None:
                labels = torch.empty((*slab_labels.shape[:-1], pred.shape[-1]), dtype=torch.uint8)
                if slab_probs is not None:
                    probs = torch.empty((*slab_probs.shape[:-1], pred.shape[-1]), dtype=torch.uint16)
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
        orig = d[self.orig_key]
        ops = list(getattr(orig, "applied_operations", []))
        depth = pred.shape[-1]
        if not ops or ops[-1].get("class") != "Resize" or int(ops[-1]["orig_size"][-1]) != depth:
            return [(d, slice(None))]
        parts = []
        for z0 in range(0, depth, self.slab):
            z1 = min(z0 + self.slab, depth)
            op = deepcopy(ops[-1])
            op["orig_size"] = (*tuple(op["orig_size"])[:-1], z1 - z0)
            header = MetaTensor(torch.zeros(1), meta=orig.meta, applied_operations=[*ops[:-1], op])
            parts.append(({**d, self.orig_key: header}, slice(z0, z1)))
        return parts

    def _argmax(self, d: dict, pred: torch.Tensor, first: list) -> torch.Tensor:
        for c, channel in self._channels(d, pred, first):
            if c == 0:
                best, labels = channel, torch.zeros_like(channel, dtype=torch.uint8)
                continue
            labels.masked_fill_(channel > best, c)
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
        for c, channel in self._channels(d, pred, []):
            steps = channel.sub_(top).exp_().div_(total).mul_(PROBABILITY_SCALE).round_()
            probs[c : c + 1] = steps.cpu().to(torch.uint16)  # (uint16 has few operations on a GPU)
            if c == 0:
                best = steps
                continue
            labels.masked_fill_(steps > best, c)
            torch.maximum(best, steps, out=best)
        return labels, probs
