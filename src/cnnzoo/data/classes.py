"""ImageNet's 1000 classes: wnids and human-readable names, shipped with the package (offline).

Index i is the class of the i-th wnid in sorted order (torchvision's ImageFolder and ILSVRC
convention). The wnids come from ``imagenet_wnids.txt`` (the ILSVRC-2012 synsets, as in the
devkit's meta.mat); the names are the ones torchvision's weights carry, in the same order.
"""

from functools import cache
from importlib.resources import files

from torchvision.models import ResNet18_Weights


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names; index i is the class of the i-th wnid in sorted order."""
    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 wnids in sorted order (= class index order)."""
    return tuple(files("cnnzoo.data").joinpath("imagenet_wnids.txt").read_text().split())


@cache
def imagenet_name_of() -> dict[str, str]:
    """wnid -> readable name, e.g. ``"n02123159" -> "tiger cat"``."""
    return dict(zip(imagenet_wnids(), imagenet_class_names(), strict=True))
