"""The networks as the lecture's experiments change them (pure ``torch.nn``).

- ``with_activation(net, name)``: every ReLU of a network, the modules and the functional ones
  inside torchvision's blocks, becomes ``name`` (tanh, sigmoid, ...: Krizhevsky et al. 2012,
  Figure 1 compares ReLU with tanh). The parameters, and so the state dict, stay the same.
- ``without_shortcuts(net)``: a ResNet whose blocks add no identity, He et al. 2016's "plain"
  networks (sec. 4.1: the same layers, no shortcuts; the projection convolutions go too).
- ``alexnet2012``: AlexNet as published (Krizhevsky et al. 2012, sec. 3 and Figure 2).

A network changed here is not torchvision's: its weights do not load into torchvision's
architecture as they mean (``cnnzoo.models.is_torchvision_architecture`` says so).
"""

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import ConfigError

# (the modules, not the builder functions torchvision.models exports under the same names)
tv_densenet = importlib.import_module("torchvision.models.densenet")
tv_googlenet = importlib.import_module("torchvision.models.googlenet")
tv_inception = importlib.import_module("torchvision.models.inception")
tv_resnet = importlib.import_module("torchvision.models.resnet")

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
}


def activation_module(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.activation={name!r}: choose one of {list(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


class _ActBasicConv2d(tv_googlenet.BasicConv2d):
    """GoogLeNet's conv-BN block with its activation as a module (torchvision: ``F.relu``)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class _ActInceptionBasicConv2d(tv_inception.BasicConv2d):
    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class _ActGoogLeNetAux(tv_googlenet.InceptionAux):
    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = self.act(self.fc1(torch.flatten(x, 1)))
        return self.fc2(self.dropout(x))


class _ActDenseNet(tv_densenet.DenseNet):
    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.features(x))
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


_FUNCTIONAL_RELU = {  # torchvision's modules that call F.relu: the same module with a module
    tv_googlenet.BasicConv2d: _ActBasicConv2d,
    tv_inception.BasicConv2d: _ActInceptionBasicConv2d,
    tv_googlenet.InceptionAux: _ActGoogLeNetAux,
    tv_densenet.DenseNet: _ActDenseNet,
}


def with_activation(net: nn.Module, name: str) -> nn.Module:
    """``net`` with every ReLU replaced by activation ``name`` (in place; ``relu``: unchanged)."""
    activation_module(name)  # (checked)
    if name == "relu":
        return net
    for module in list(net.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, activation_module(name))
        if type(module) in _FUNCTIONAL_RELU:
            module.__class__ = _FUNCTIONAL_RELU[type(module)]  # (same parameters and keys)
            module.act = activation_module(name)
    return net


class _PlainBasicBlock(tv_resnet.BasicBlock):
    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class _PlainBottleneck(tv_resnet.Bottleneck):
    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)))


def without_shortcuts(net: tv_resnet.ResNet) -> tv_resnet.ResNet:
    """He et al.'s plain network of a ResNet (in place): each block's output is its stacked
    layers alone, without the identity added, and without the projection convolutions."""
    for module in net.modules():
        if isinstance(module, tv_resnet.BasicBlock | tv_resnet.Bottleneck):
            plain = _PlainBasicBlock if isinstance(module, tv_resnet.BasicBlock) else (
                _PlainBottleneck
            )  # fmt: skip
            module.__class__ = plain
            module.downsample = None
    return net


class AlexNet2012(nn.Module):
    """AlexNet as Krizhevsky et al. 2012 published it: 96-256-384-384-256 kernels (11x11/4,
    5x5, 3x3, 3x3, 3x3), ReLU, local response normalisation (k=2, n=5, alpha=1e-4, beta=0.75)
    after the first two convolutions, overlapping 3x3/2 max-pooling, two 4096-unit layers with
    dropout 0.5. The two-GPU split is kept as grouped convolutions where the paper connects
    kernels only to those on their own GPU (conv2, conv4, conv5: ``groups=2``); conv3 and the
    fully connected layers see both halves. Initialised as the paper's sec. 5: weights from
    N(0, 0.01), biases 1 in conv2, conv4, conv5 and the hidden fully connected layers, else 0.
    About 61 million parameters at 1000 classes (the paper: "60 million").

    224 px gives the paper's 55-27-13-6 maps (padding 2 on conv1, as torchvision's: the
    paper's 224 needs it, or 227 px). ``small_input``: conv1 is 3x3 stride 1 for 32-64 px, and
    an adaptive pool feeds the classifier 6x6 maps at any size (as torchvision's AlexNet)."""

    def __init__(self, num_classes: int = 1000, small_input: bool = False, dropout: float = 0.5):
        super().__init__()

        def lrn() -> nn.LocalResponseNorm:
            return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)

        first = nn.Conv2d(3, 96, 3, stride=1, padding=1) if small_input else (
            nn.Conv2d(3, 96, 11, stride=4, padding=2)
        )  # fmt: skip
        self.features = nn.Sequential(
            first, nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )  # fmt: skip
        ones = {4, 10, 12}  # conv2, conv4, conv5 (indices in features)
        for i, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, 0, 0.01)
                nn.init.constant_(layer.bias, 1.0 if i in ones else 0.0)
        for i, layer in enumerate(self.classifier):
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0, 0.01)
                nn.init.constant_(layer.bias, 0.0 if i == len(self.classifier) - 1 else 1.0)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)
