"""``ValidateCased``: fail early, naming the file, on a case the pipeline cannot use."""

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import MapTransform

from mgrad.data.errors import DataError
from mgrad.data.validate import case_problems


class ValidateCased(MapTransform):
    """Checks a loaded channel-first case (see :func:`mgrad.data.validate.case_problems`); leaves it unchanged.

    ``keys`` are ``(image_key,)`` or ``(image_key, label_key)``; ``channels`` is the number of image channels the
    network takes (``None``: any). Raises :class:`DataError` listing every problem with its file. Place it after
    ``EnsureChannelFirstd`` and ``Orientationd`` and before any remapping (``label_map`` lists the raw values).
    """

    def __init__(
        self,
        keys: Any = ("image", "label"),
        num_classes: int | None = None,
        label_map: Mapping[int, int] | None = None,
        require_volume: bool = True,
        allow_missing_keys: bool = False,
        channels: int | None = 1,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes, self.label_map, self.require_volume = num_classes, label_map, require_volume
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key = self.keys[0]
        label_key = self.keys[1] if len(self.keys) > 1 else None
        problems = case_problems(
            d.get(image_key), d.get(label_key), self.num_classes, self.label_map, self.require_volume, self.channels
        )
        if problems:
            raise DataError(" | ".join(f"{f}: {'; '.join(p)}" for f, p in problems.items()))
        return d
