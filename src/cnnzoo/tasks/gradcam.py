"""Where Grad-CAM looks (Selvaraju et al. 2017, through pytorch-grad-cam): the layer of each
family, moved to a shallower block where its map would be too small to show anything at the
run's input size, and the maps themselves."""

import copy
import logging

import torch
from torch import Tensor, nn

from cnnzoo.errors import ConfigError

log = logging.getLogger(__name__)

# Where Grad-CAM looks, by family: the last convolutional block (its output keeps the spatial
# layout the class evidence is read from); visualize.layer= names another module.
TARGET_LAYERS = {
    "resnet": "layer4",
    "vgg": "features",  # (its last module: the final max-pool over the last conv's ReLU)
    "alexnet": "features",
    "densenet": "features",  # (norm5, over the last dense block)
    "googlenet": "inception5b",
    "inception_v3": "Mixed_7c",
}


def target_layer(net: nn.Module, arch: str, name: str | None = None) -> nn.Module:
    """The module Grad-CAM reads: ``name`` (a dotted module path), else the family's last
    convolutional block from ``TARGET_LAYERS`` (the last module of a Sequential)."""
    if name is None:
        family = next((f for f in TARGET_LAYERS if arch.startswith(f)), None)
        if family is None:
            raise ConfigError(f"no Grad-CAM layer known for {arch!r}; give visualize.layer=.")
        name = TARGET_LAYERS[family]
    try:
        layer = net.get_submodule(name)
    except AttributeError:
        blocks = [n for n, _ in net.named_children()]
        raise ConfigError(
            f"visualize.layer={name!r}: {arch} has no such module; its blocks are {blocks}."
        ) from None
    return layer[-1] if isinstance(layer, nn.Sequential) else layer


MIN_MAP = 3  # px: a Grad-CAM map smaller than this on a side is a flat tint over the image


def gradcam_layer(net: nn.Module, arch: str, name: str | None, size: int) -> tuple[str, nn.Module]:
    """(name, module) Grad-CAM reads at ``size`` px: ``name`` when given, else the family's last
    convolutional block, or, where its map is under ``MIN_MAP`` on a side at this size (ResNet's
    layer4 is 1x1 at 32 px), the deepest block before it whose map is not (said in the log)."""
    layer = target_layer(net, arch, name)
    if name is not None:
        return name, layer
    default = next(TARGET_LAYERS[f] for f in TARGET_LAYERS if arch.startswith(f))
    block = net.get_submodule(default)
    candidates = []  # the network's blocks up to this one, then its own modules
    for label, module in net.named_children():
        if module is block:
            break
        candidates.append((label, module))
    if isinstance(block, nn.Sequential):  # (resnet's layer4.0, .1; vgg's features.0, ...)
        candidates += [(f"{default}.{n}", m) for n, m in block.named_children()]
    else:
        candidates.append((default, block))
    sizes = _map_sizes(net, [m for _, m in candidates], size)
    for (label, module), shape in reversed(list(zip(candidates, sizes, strict=True))):
        if shape is not None and min(shape) >= MIN_MAP:
            if module is not layer:
                log.info(
                    "Grad-CAM: at %d px the map of %s is %s, a flat tint; reading %s (%s) "
                    "instead (visualize.layer= chooses another)", size, default,
                    "x".join(map(str, sizes[-1] or ())), label, "x".join(map(str, shape)),
                )  # fmt: skip
            return label, module
    return default, layer


def _map_sizes(net: nn.Module, modules: list[nn.Module], size: int) -> list[tuple | None]:
    """The (H, W) of each of ``modules``' output for one ``size`` px image (None: not a map),
    from a copy of ``net`` on the meta device (shapes only: no memory, no arithmetic)."""
    position = {id(m): i for i, m in enumerate(net.modules())}
    meta = copy.deepcopy(net).to("meta").eval()
    copies = list(meta.modules())
    shapes: list[tuple | None] = [None] * len(modules)

    def keep(i: int):
        def hook(module, inputs, out) -> None:
            is_map = isinstance(out, Tensor) and out.dim() == 4
            shapes[i] = tuple(out.shape[-2:]) if is_map else None

        return hook

    hooks = [copies[position[id(m)]].register_forward_hook(keep(i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            meta(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def gradcam_maps(module: nn.Module, images: Tensor, layer: nn.Module, classes: list[int]):
    """Grad-CAM maps (N, H, W) in [0, 1] of ``classes`` over ``images`` (normalised)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=module, target_layers=[layer]) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes])
    return torch.from_numpy(maps)
