"""Train and eval preprocessing of the ImageNet papers (torchvision's reference presets and
options), built from the model's sizes.

Train recipes (``data.train_crop``): ``rrc`` random-resized crop, Szegedy et al. 2014's scale
augmentation and torchvision's recipe; ``alexnet`` the short side to 256, the centre 256 square,
a random 224 crop (Krizhevsky et al. 2012, sec. 4.1); ``vgg`` scale jittering, the short side
random in [256, 512], then a random 224 crop (Simonyan & Zisserman 2014, sec. 3.1); ``center``
no augmentation, the eval crop (the short side to ``eval_resize``, the centre square: the same
crop every epoch, for training without the papers' augmentation; with ``data.hflip=false``).
Then
optionally: horizontal flip, colour jitter, AutoAugment / RandAugment / TrivialAugment, AlexNet's
PCA lighting noise, random erasing. Mixup and CutMix act on batches (``batch_mix``).

With ``normalize=False`` the transforms stop at uint8 tensors (a quarter of the bytes to copy):
the DataModule then converts and normalises on the accelerator (``normalize_batch``).
"""

import torch
from torch import Tensor
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_CROPS = ("rrc", "alexnet", "vgg", "center")
AUTO_AUGMENTS = {
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
    "randaugment": lambda: v2.RandAugment(),
    "trivialaugment": lambda: v2.TrivialAugmentWide(),
    "augmix": lambda: v2.AugMix(),
}
# AlexNet's "PCA lighting": eigenvalues and eigenvectors of the RGB covariance of ImageNet
# pixels in [0, 1] (as used by fb.resnet.torch and torchvision's old references).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class Lighting(torch.nn.Module):
    """Add ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std^2) per image
    (Krizhevsky et al. 2012, sec. 4.1: std 0.1), on a float image in [0, 1]."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std
        self.register_buffer("eigval", torch.tensor(PCA_EIGVAL))
        self.register_buffer("eigvec", torch.tensor(PCA_EIGVEC))

    def forward(self, image: Tensor) -> Tensor:
        alpha = torch.randn(3) * self.std
        shift = self.eigvec @ (alpha * self.eigval)
        return image + shift.view(3, 1, 1).to(image.dtype)


def _to_tensor(normalize: bool, lighting: float = 0.0) -> list:
    steps: list = [v2.PILToTensor()]
    if normalize or lighting:
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if lighting:
            steps.append(Lighting(lighting))
        steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return steps


def train_transform(
    image_size: int,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    *,
    crop: str = "rrc",
    resize: int = 256,
    scale_jitter: tuple[int, int] = (256, 512),
    color_jitter: float = 0.0,
    auto_augment: str | None = None,
    lighting: float = 0.0,
    random_erasing: float = 0.0,
    normalize: bool = True,
) -> v2.Compose:
    """The train preprocessing; see the module docstring for the recipes."""
    if crop == "rrc":
        steps: list = [v2.RandomResizedCrop(image_size, scale=tuple(crop_scale))]
    elif crop == "alexnet":
        steps = [v2.Resize(resize), v2.CenterCrop(resize), v2.RandomCrop(image_size)]
    elif crop == "center":
        steps = [v2.Resize(resize), v2.CenterCrop(image_size)]
    else:  # vgg (data.train_crop is checked with the other data settings: data/options.py)
        low, high = scale_jitter
        if low < image_size:
            raise ValueError(f"scale_jitter {list(scale_jitter)} is below the crop {image_size}")
        steps = [v2.RandomShortestSize(list(range(low, high + 1))), v2.RandomCrop(image_size)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    if auto_augment:
        if auto_augment not in AUTO_AUGMENTS:
            raise ValueError(f"auto_augment {auto_augment!r}: choose one of {list(AUTO_AUGMENTS)}")
        steps.append(AUTO_AUGMENTS[auto_augment]())
    steps += _to_tensor(normalize, lighting)
    if random_erasing:
        steps.append(v2.RandomErasing(p=random_erasing))
    return v2.Compose(steps)


def eval_transform(image_size: int, resize: int, normalize: bool = True) -> v2.Compose:
    """Resize the short side to ``resize``, then take the centre ``image_size`` crop."""
    return v2.Compose([v2.Resize(resize), v2.CenterCrop(image_size), *_to_tensor(normalize)])


CROPS = {"center": 1, "flip": 2, "ten": 10}  # evaluation modes and the views each averages


class MultiCrop:
    """Eval views of one image, stacked as (views, 3, size, size), from an image whose short
    side was resized: ``center`` the centre crop; ``flip`` it and its mirror image; ``ten``
    the four corner crops and the centre crop, then the same five of the mirrored image, i.e.
    the five patches' reflections (Krizhevsky et al. 2012; torchvision's TenCrop order).
    A class, not a lambda, so that DataLoader workers can pickle it."""

    def __init__(self, image_size: int, crop: str, normalize: bool = True) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop={crop!r}: choose one of {sorted(CROPS)}")
        self.crop = crop
        self.ten = v2.TenCrop(image_size)
        self.centre = v2.CenterCrop(image_size)
        self.tensor = v2.Compose(_to_tensor(normalize))

    def __call__(self, image) -> torch.Tensor:
        if self.crop == "ten":
            views = self.ten(image)
        else:
            centre = self.centre(image)
            views = (centre,) if self.crop == "center" else (centre, v2.functional.hflip(centre))
        return torch.stack([self.tensor(view) for view in views])


def multi_crop_transform(
    image_size: int, resize: int, crop: str, normalize: bool = True
) -> v2.Compose:
    """Resize the short side to ``resize``, then ``MultiCrop(image_size, crop)``."""
    return v2.Compose([v2.Resize(resize), MultiCrop(image_size, crop, normalize)])


def normalize_batch(images: Tensor) -> Tensor:
    """uint8 images (..., 3, H, W) -> float, scaled to [0, 1], normalised by ImageNet's mean and
    std, on the images' device (one fused pass instead of one per image in the workers)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1) * 255
    return (images.float() - mean) / std


def batch_mix(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> v2.Transform | None:
    """Mixup (Zhang et al. 2018) and/or CutMix (Yun et al. 2019) on a batch of (images, labels):
    one of them per batch, picked at random when both are on; labels become class
    probabilities (the loss takes them as soft targets)."""
    mixes = []
    if mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
