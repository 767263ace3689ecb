"""One registry: a name maps to a builder that returns a plain ``torch.nn.Module``.

Every builder wraps torchvision's, so with ``small_input=False`` the architecture, the state
dict keys and shapes and the class order are exactly torchvision's (and the papers').
``small_input=True`` adapts the stem for 32-64 px images, as the CIFAR literature does; each
family's docstring says how.
"""

import logging
from collections.abc import Callable
from functools import partial

import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torchvision.models.inception import InceptionAux

from cnnzoo.errors import ConfigError, check_switch, is_number
from cnnzoo.models.variants import AlexNet2012, with_activation, without_shortcuts
from cnnzoo.models.weights import load_weights

log = logging.getLogger(__name__)
Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}

VGG_NAMES = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
RESNET_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
DENSENET_NAMES = ["densenet121", "densenet161", "densenet169", "densenet201"]
TORCHVISION_NAMES = {"alexnet", "googlenet", "inception_v3", *VGG_NAMES, *RESNET_NAMES,
                     *DENSENET_NAMES}  # fmt: skip


def list_models() -> list[str]:
    """Every architecture name ``create_model`` accepts, sorted."""
    return sorted(_REGISTRY)


SWITCHES = (
    "small_input",
    "residual",
    "zero_init_residual",
    "aux_logits",
    "transform_input",
    "memory_efficient",
)  # the families' true/false options


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    weights: str | None = None,
    pretrained: bool = False,
    **kwargs,
) -> nn.Module:
    """Build architecture ``name`` for ``num_classes`` classes.

    Weights are freshly initialised, unless ``weights`` names a local torchvision-format state
    dict or ``pretrained`` asks for torchvision's published weights from the torch hub cache
    (nothing is downloaded). ``kwargs`` are the family's options (``small_input``, ``dropout``,
    ``aux_logits``, ``zero_init_residual``, ...).
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    activation = kwargs.pop("activation", "relu")
    for key in SWITCHES:
        if key in kwargs:
            check_switch(f"model.{key}", kwargs[key])
    for key in ("dropout", "dropout_aux", "drop_rate"):  # (2: a ValueError traceback; -1: ignored)
        if key in kwargs and not (is_number(kwargs[key]) and kwargs[key] < 1):
            raise ConfigError(
                f"model.{key}={kwargs[key]!r}: give the probability of dropping a unit, from 0 "
                "(off) to below 1 (0.5 in AlexNet, VGG and Inception v3)."
            )
    try:
        net = _REGISTRY[name](num_classes=num_classes, **kwargs)
    except TypeError as e:  # an option this family does not have
        raise ConfigError(f"model {name!r}: {e}") from None
    with_activation(net, activation)
    if weights or pretrained:
        if name not in TORCHVISION_NAMES:
            raise ConfigError(
                f"model {name!r} is not a torchvision architecture: it has no published "
                "weights, and torchvision-format files do not fit it. Start it from random "
                "weights, or from a run of its own (model.weights=RUN/checkpoints/best.ckpt)."
            )
        load_weights(net, name, path=weights)
        if not is_torchvision_architecture(activation, kwargs.get("residual", True)):
            log.warning(
                "model %s with activation=%s residual=%s is not torchvision's network: the "
                "weights loaded were trained with ReLUs and shortcuts, so they start it from "
                "parameters that mean something else there.",
                name,
                activation,
                kwargs.get("residual", True),
            )
    return net


def is_torchvision_architecture(activation: str = "relu", residual: bool = True) -> bool:
    """Whether the lecture's knobs leave the network as torchvision builds it."""
    return activation == "relu" and residual is not False


def _register(names: list[str], family: Callable[..., nn.Module]) -> None:
    for name in names:
        _REGISTRY[name] = partial(family, getattr(tvm, name))


def _kaiming_conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def resnet(
    builder: Builder,
    *,
    num_classes: int,
    small_input: bool = False,
    zero_init_residual: bool = False,
    residual: bool = True,
) -> tvm.ResNet:
    """ResNet (He et al. 2015). ``small_input``: the CIFAR stem of the paper's sec. 4.2, a 3x3
    stride-1 conv and no max-pool, which keeps 4x the resolution of the ImageNet stem.
    ``residual=False``: the paper's plain network of the same depth (no shortcuts)."""
    net = builder(num_classes=num_classes, zero_init_residual=zero_init_residual)
    if not residual:
        without_shortcuts(net)
    if small_input:
        net.conv1 = _kaiming_conv(3, net.conv1.out_channels, 3, 1, 1)
        net.maxpool = nn.Identity()
    return net


def densenet(
    builder: Builder,
    *,
    num_classes: int,
    small_input: bool = False,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> tvm.DenseNet:
    """DenseNet (Huang et al. 2017). ``small_input``: 3x3 stride-1 first conv and no max-pool,
    as the paper's CIFAR networks."""
    net = builder(num_classes=num_classes, drop_rate=drop_rate, memory_efficient=memory_efficient)
    if small_input:
        net.features.conv0 = _kaiming_conv(3, net.features.conv0.out_channels, 3, 1, 1)
        net.features.pool0 = nn.Identity()
    return net


def alexnet(
    builder: Builder, *, num_classes: int, small_input: bool = False, dropout: float = 0.5
) -> tvm.AlexNet:
    """AlexNet (Krizhevsky et al. 2012), torchvision's single-tower variant. ``small_input``:
    the 11x11 stride-4 first conv becomes 3x3 stride 1 (as CIFAR AlexNet variants do); the
    three max-pools then take 32 px to 3x3, and the adaptive pool feeds the same classifier."""
    net = builder(num_classes=num_classes, dropout=dropout)
    if small_input:
        net.features[0] = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1)
    return net


def vgg(
    builder: Builder, *, num_classes: int, small_input: bool = False, dropout: float = 0.5
) -> tvm.VGG:
    """VGG (Simonyan & Zisserman 2014). ``small_input``: the convolutional layers are kept (five
    max-pools take 32 px to 1x1, as CIFAR VGGs do); the 7x7 average pool becomes a 1x1 pool
    and the first classifier layer takes 512 features instead of 512x7x7 copies of them."""
    net = builder(num_classes=num_classes, dropout=dropout)
    if small_input:
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        first = nn.Linear(512, net.classifier[0].out_features)
        nn.init.normal_(first.weight, 0, 0.01)  # torchvision's VGG init
        nn.init.zeros_(first.bias)
        net.classifier[0] = first
    return net


def googlenet(
    builder: Builder,
    *,
    num_classes: int,
    small_input: bool = False,
    aux_logits: bool = True,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
    transform_input: bool = False,
) -> tvm.GoogLeNet:
    """GoogLeNet / Inception v1 (Szegedy et al. 2014) with its two auxiliary classifiers, which
    return ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` in training mode only.
    ``small_input``: 3x3 stride-1 first conv and no max-pool after it or after conv3, so 32 px
    reaches the inception blocks at 32x32, as CIFAR GoogLeNets do."""
    net = builder(
        num_classes=num_classes,
        aux_logits=aux_logits,
        dropout=dropout,
        dropout_aux=dropout_aux,
        transform_input=transform_input,
        init_weights=True,
    )
    if small_input:
        net.conv1.conv = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.trunc_normal_(net.conv1.conv.weight, std=0.01, a=-2, b=2)  # torchvision's init
        net.maxpool1 = nn.Identity()
        net.maxpool2 = nn.Identity()
    return net


class _AdaptiveInceptionAux(InceptionAux):
    """Inception v3's auxiliary head with its 5x5/3 average pool made adaptive (to 5x5), so it
    works on the small maps of small inputs. Same parameters as torchvision's head."""

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, 5)
        x = self.conv1(self.conv0(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.flatten(1))


def inception_v3(
    builder: Builder,
    *,
    num_classes: int,
    small_input: bool = False,
    aux_logits: bool = True,
    dropout: float = 0.5,
    transform_input: bool = False,
) -> tvm.Inception3:
    """Inception v3 (Szegedy et al. 2015) with its auxiliary classifier, which returns
    ``InceptionOutputs(logits, aux_logits)`` in training mode only; 299 px input, 75 px at least.
    ``small_input``: the first conv's stride 2 and both stem max-pools are dropped (as CIFAR
    Inception v3s do) and the auxiliary head pools adaptively, so 32 px works, aux head on."""
    net = builder(
        num_classes=num_classes,
        aux_logits=aux_logits,
        dropout=dropout,
        transform_input=transform_input,
        init_weights=True,
    )
    if small_input:
        net.Conv2d_1a_3x3.conv.stride = (1, 1)
        net.maxpool1 = nn.Identity()
        net.maxpool2 = nn.Identity()
        if aux_logits:
            adaptive = _AdaptiveInceptionAux(net.AuxLogits.conv0.conv.in_channels, num_classes)
            adaptive.load_state_dict(net.AuxLogits.state_dict())  # keep torchvision's init
            net.AuxLogits = adaptive
    return net


def alexnet2012(*, num_classes: int, small_input: bool = False, dropout: float = 0.5) -> nn.Module:
    """AlexNet as published in 2012 (``variants.AlexNet2012``): LRN, grouped convolutions."""
    return AlexNet2012(num_classes=num_classes, small_input=small_input, dropout=dropout)


_register(["alexnet"], alexnet)
_REGISTRY["alexnet2012"] = alexnet2012
_register(VGG_NAMES, vgg)
_register(["googlenet"], googlenet)
_register(["inception_v3"], inception_v3)
_register(RESNET_NAMES, resnet)
_register(DENSENET_NAMES, densenet)
