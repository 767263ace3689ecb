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


CROPS = {"center": 1, "flip": 2, "ten": 10}  # evaluation modes and the views each averages


class MultiCrop:
    """Eval views of one image, stacked as (views, 3, size, size), from an image whose short
    side was resized: ``center`` the centre crop; ``flip`` it and its mirror image; ``ten``
    the four corner crops and the centre crop, then the same five of the mirrored image, i.e.
    the five patches' reflections (Krizhevsky et al. 2012; torchvision's TenCrop order).
    A class, not a lambda, so that DataLoader workers can pickle it."""

    def __init__(self, image_size: int, crop: str) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop={crop!r}: choose one of {sorted(CROPS)}")
        self.crop = crop
        self.ten = v2.TenCrop(image_size)
        self.centre = v2.CenterCrop(image_size)
        self.tensor = v2.Compose(_to_normalised_tensor())

    def __call__(self, image) -> torch.Tensor:
        if self.crop == "ten":
            views = self.ten(image)
        else:
            centre = self.centre(image)
            views = (centre,) if self.crop == "center" else (centre, v2.functional.hflip(centre))
        return torch.stack([self.tensor(view) for view in views])


def multi_crop_transform(image_size: int, resize: int, crop: str) -> v2.Compose:
    """Resize the short side to ``resize``, then ``MultiCrop(image_size, crop)``."""
    return v2.Compose([v2.Resize(resize), MultiCrop(image_size, crop)])
