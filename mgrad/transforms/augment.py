"""TransUNet's 2D augmentation with MONAI transforms."""

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.transforms import Compose, Identityd, MapTransform, OneOf, RandAxisFlipd, RandRotate90d, RandRotated
from monai.transforms.transform import Randomizable


class Augment2Dd(Randomizable, MapTransform):
    """With p=0.5 rot90 by k in 0..3 then a flip of one random axis; else (p=0.25) a rotation by an angle in
    [-20, 20] degrees (nearest-neighbour for image and label, as TransUNet's order-0 rotation; zero padding); else
    (p=0.25) nothing.

    A MONAI ``OneOf`` of MONAI transforms, wrapped as a plain MapTransform so that ``Compose`` maps it over the list
    a multi-sample transform returns and every sample draws its own branch (a bare ``OneOf`` gets the whole list
    and picks one branch for all of it).
    """

    def __init__(self, image_key: str = "image", label_key: str = "label") -> None:
        MapTransform.__init__(self, (image_key, label_key))
        keys = (image_key, label_key)
        rot_flip = Compose([RandRotate90d(keys, prob=0.75, max_k=3), RandAxisFlipd(keys, prob=1.0)])
        angle = math.radians(20)
        rotate = RandRotated(keys, angle, prob=1.0, mode="nearest", padding_mode="zeros", dtype=np.float32)
        self.choice = OneOf([rot_flip, rotate, Identityd(keys)], weights=(0.5, 0.25, 0.25))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> "Augment2Dd":
        self.choice.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """The wrapped ``OneOf`` and its transforms draw their own parameters."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.choice(dict(data))
