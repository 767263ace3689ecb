"""Human-readable ImageNet class names.

torchvision ships the 1000 names offline, in class-index order (= sorted wnid order).
"""

from functools import cache

from torchvision.models import ResNet18_Weights


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names; index i is the class of the i-th wnid in sorted order."""
    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
