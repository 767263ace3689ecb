"""Train and eval preprocessing of the ImageNet papers (torchvision's reference presets)."""

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalised_tensor() -> list[v2.Transform]:
    return [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def train_transform(
    image_size: int, crop_scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True
) -> v2.Compose:
    """Random-resized crop (Szegedy et al. 2014's scale augmentation) and horizontal flip."""
    steps: list[v2.Transform] = [v2.RandomResizedCrop(image_size, scale=tuple(crop_scale))]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _to_normalised_tensor())


def eval_transform(image_size: int, resize: int) -> v2.Compose:
    """Resize the short side to ``resize``, then take the centre ``image_size`` crop."""
    return v2.Compose([v2.Resize(resize), v2.CenterCrop(image_size), *_to_normalised_tensor()])
