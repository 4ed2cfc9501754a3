"""Network output -> labels (and probabilities) in each input's original geometry, one class channel at a time.

Inverting all class channels of a large volume at once holds every channel at full resolution in float32 (a
512x512x600 CT with 9 classes: 5.7 GB). :class:`InvertLabelsd` inverts one channel at a time with MONAI's
``Invertd`` and keeps only a running maximum, so the peak stays near two full-resolution float32 channels whatever
the number of classes; the labels are exactly the argmax of the inverted outputs.
"""

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, InvertibleTransform, Transform

from mgrad.writers import PROBABILITY_SCALE

__all__ = ["InvertLabelsd"]


class InvertLabelsd(Transform):
    """Maps ``data[key]``, network outputs ``(C, h, w, D)`` on the preprocessed grid of ``data[orig_key]``, back to
    the original geometry (inverting ``transform``) as ``uint8`` labels ``(1, H, W, D)``; optionally also stores the
    softmax probabilities there under ``prob_key``.

    Labels are the argmax of the inverted outputs (interpolated as the preprocessing resampled the image), computed
    one channel at a time. With ``prob_key`` the probabilities, the softmax of the inverted outputs, are stored as
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
    ) -> None:
        if argmax_first and prob_key is not None:
            raise ValueError("argmax_first gives labels only: set prob_key=None or argmax_first=False")
        self.key, self.orig_key, self.prob_key, self.argmax_first = key, orig_key, prob_key, argmax_first
        self.invert = Invertd(key, transform, orig_keys=orig_key, nearest_interp=False, to_tensor=True)
        self.invert_nearest = Invertd(key, transform, orig_keys=orig_key, nearest_interp=True, to_tensor=True)

    def _inverted(self, data: Mapping[Hashable, Any], channels: torch.Tensor, nearest: bool = False) -> MetaTensor:
        invert = self.invert_nearest if nearest else self.invert
        channels = MetaTensor(torch.as_tensor(channels))  # Invertd takes the operations to undo from orig_key
        return invert({self.key: channels, self.orig_key: data[self.orig_key]})[self.key]

    def _channels(self, data: Mapping[Hashable, Any], pred: torch.Tensor, meta: dict):
        """Each class channel inverted, as ``(index, float32 (1, H, W, D) tensor)``; ``meta`` gets the inverted
        meta data (original affine, file name)."""
        for c in range(pred.shape[0]):
            channel = self._inverted(data, pred[c : c + 1])
            if c == 0:
                meta.update(channel.meta)
            yield c, channel.as_tensor().float()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        pred = d[self.key]
        if self.argmax_first:
            labels = torch.argmax(torch.as_tensor(pred), dim=0, keepdim=True).to(torch.uint8)
            d[self.key] = self._inverted(d, labels, nearest=True).round().to(torch.uint8)
            return d
        meta: dict = {}
        if self.prob_key is None:
            labels = self._argmax(d, pred, meta)
        else:
            labels, probs = self._probabilities(d, pred, meta)
            d[self.prob_key] = MetaTensor(probs, meta=dict(meta))
        d[self.key] = MetaTensor(labels, meta=meta)
        return d

    def _argmax(self, d: dict, pred: torch.Tensor, meta: dict) -> torch.Tensor:
        for c, channel in self._channels(d, pred, meta):
            if c == 0:
                best, labels = channel, torch.zeros(channel.shape, dtype=torch.uint8)
                continue
            labels.masked_fill_(channel > best, c)
            torch.maximum(best, channel, out=best)
        return labels

    def _probabilities(self, d: dict, pred: torch.Tensor, meta: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # first pass: running maximum and running sum of exponentials (rescaled as the maximum grows)
        for c, channel in self._channels(d, pred, meta):
            if c == 0:
                top, total = channel, torch.ones(channel.shape)
                continue
            new_top = torch.maximum(top, channel)
            total.mul_(top.sub_(new_top).exp_()).add_(channel.sub_(new_top).exp_())
            top = new_top
        # second pass: quantised probabilities, and labels as the argmax of the stored steps (exact in float32)
        probs = torch.empty((pred.shape[0], *top.shape[1:]), dtype=torch.uint16)
        labels = torch.zeros(top.shape, dtype=torch.uint8)
        for c, channel in self._channels(d, pred, {}):
            steps = channel.sub_(top).exp_().div_(total).mul_(PROBABILITY_SCALE).round_()
            probs[c : c + 1] = steps.to(torch.uint16)
            if c == 0:
                best = steps
                continue
            labels.masked_fill_(steps > best, c)
            torch.maximum(best, steps, out=best)
        return labels, probs
