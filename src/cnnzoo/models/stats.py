"""Parameter counts, multiply-adds and torchvision's published figures for every architecture.

Counting runs on the meta device: no memory for weights, no arithmetic, a second per model.
"""

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.models.registry import TORCHVISION_NAMES, create_model
from cnnzoo.models.weights import published_weights


@dataclass(frozen=True)
class ModelStats:
    name: str
    params: int  # with 1000 classes, auxiliary heads as in torchvision's published figure
    gmacs: float  # multiply-adds (torchvision's "GFLOPS" label) at input_size, eval mode
    input_size: int  # px
    published_top1: float  # torchvision's ImageNet-1K figures for its weights, in %
    published_top5: float
    published_params: int
    published_gmacs: float


def published_config(name: str) -> dict[str, bool]:
    """The options of torchvision's published figures: its parameter count includes Inception
    v3's auxiliary head but not GoogLeNet's two (its weights builder drops them)."""
    return {"aux_logits": False} if name == "googlenet" else {}


def count_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, **kwargs).parameters())


def count_gmacs(name: str, input_size: int, **kwargs) -> float:
    """Multiply-adds of one eval-mode forward pass of a single image, in billions."""
    with torch.device("meta"):
        net = create_model(name, **kwargs).eval()
        image = torch.empty(1, 3, input_size, input_size)
        with FlopCounterMode(display=False) as counter:
            net(image)
    return counter.get_total_flops() / 2e9  # the counter counts a multiply-add as 2 FLOPs


def model_stats(name: str) -> ModelStats:
    weights = published_weights(name)
    meta = weights.meta
    metrics = meta["_metrics"]["ImageNet-1K"]
    size = weights.transforms().crop_size[0]
    options = published_config(name)
    return ModelStats(
        name=name,
        params=count_params(name, **options),
        gmacs=count_gmacs(name, size, **options),
        input_size=size,
        published_top1=metrics["acc@1"],
        published_top5=metrics["acc@5"],
        published_params=meta["num_params"],
        published_gmacs=meta["_ops"],
    )


def all_model_stats() -> list[ModelStats]:
    """Every torchvision architecture's (those with published figures to compare with)."""
    return [model_stats(name) for name in sorted(TORCHVISION_NAMES)]
