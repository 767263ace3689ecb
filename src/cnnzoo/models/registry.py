"""One registry: a name maps to a builder that returns a plain ``torch.nn.Module``.

Builders wrap torchvision's, so state dicts keep torchvision's keys, shapes and class order.
"""

from collections.abc import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnzoo.errors import ConfigError

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    """Every architecture name ``create_model`` accepts, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, *, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build architecture ``name`` with freshly initialised weights for ``num_classes`` classes."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def _small_input_resnet_stem(net: tvm.ResNet) -> None:
    """CIFAR-style stem (He et al. 2015, sec. 4.2): 3x3 stride-1 conv, no max-pool.

    At 32-64 px the ImageNet stem (7x7 stride 2 + max-pool) leaves a 1x1 to 2x2 map before the
    last stage; this stem keeps 8x the resolution. ``conv1`` changes shape (3x3), so such a
    model's state dict no longer loads into torchvision's ImageNet ResNet.
    """
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    net.maxpool = nn.Identity()


def _resnet(builder: Builder) -> Builder:
    def build(
        *, num_classes: int, small_input: bool = False, zero_init_residual: bool = False
    ) -> nn.Module:
        net = builder(num_classes=num_classes, zero_init_residual=zero_init_residual)
        if small_input:
            _small_input_resnet_stem(net)
        return net

    return build


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register(_name)(_resnet(getattr(tvm, _name)))
