"""The DALI graph of ``data.loader=dali`` (``cnnzoo.data.dali``): what is done to each image,
from its encoded bytes to a normalised (3, H, W) image or (V, 3, H, W) eval views."""

from dataclasses import dataclass

from cnnzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Recipe:
    """What the pipeline does to each image (sizes in px)."""

    train: bool
    image_size: int
    resize: int  # eval: short side before the centre crop; alexnet: the square it crops from
    crop: str = "rrc"  # train: rrc | alexnet | vgg | center
    crop_scale: tuple[float, float] = (0.08, 1.0)
    scale_jitter: tuple[int, int] = (256, 512)
    hflip: bool = True
    eval_crop: str = "center"  # center | flip | ten
    normalize: bool = True  # False: uint8 out (normalised on the device afterwards)


def graph(recipe: Recipe, encoded, decode_device: str, decoder: dict | None = None):
    """The DALI operators from encoded files to (3, H, W) images, or (V, 3, H, W) views;
    ``decoder``: more keyword arguments for DALI's decoder (how it runs, not what it does)."""
    from nvidia.dali import fn, types

    size = recipe.image_size
    if recipe.train and recipe.crop == "rrc":
        images = fn.decoders.image_random_crop(
            encoded,
            device=decode_device,
            output_type=types.RGB,
            random_area=list(recipe.crop_scale),
            random_aspect_ratio=[3 / 4, 4 / 3],
            num_attempts=10,
            **(decoder or {}),
        )
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
        window: dict = {}
    else:
        images = fn.decoders.image(
            encoded, device=decode_device, output_type=types.RGB, **(decoder or {})
        )
        if recipe.train and recipe.crop == "vgg":
            low, high = recipe.scale_jitter
            shorter = fn.random.uniform(values=[float(s) for s in range(low, high + 1)])
            images = fn.resize(images, resize_shorter=shorter, antialias=True)
        else:
            images = fn.resize(images, resize_shorter=recipe.resize, antialias=True)
            if recipe.train and recipe.crop == "alexnet":  # the centre square, a random crop
                images = fn.crop(images, crop=(recipe.resize, recipe.resize))
        window = {"crop": (size, size)}
        if recipe.train and recipe.crop != "center":  # (center: the eval crop, every epoch)
            window["crop_pos_x"] = fn.random.uniform(range=(0.0, 1.0))
            window["crop_pos_y"] = fn.random.uniform(range=(0.0, 1.0))
    out = {"output_layout": "CHW", "dtype": types.FLOAT if recipe.normalize else types.UINT8}
    if recipe.normalize:
        out["mean"] = [255 * m for m in IMAGENET_MEAN]
        out["std"] = [255 * s for s in IMAGENET_STD]
    if recipe.train:
        mirror = fn.random.coin_flip(probability=0.5) if recipe.hflip else 0
        return fn.crop_mirror_normalize(images, mirror=mirror, **window, **out)
    views = [
        fn.crop_mirror_normalize(
            images, crop=(size, size), crop_pos_x=x, crop_pos_y=y, mirror=mirror, **out
        )
        for x, y, mirror in eval_views(recipe.eval_crop)
    ]
    return views[0] if len(views) == 1 else fn.stack(*views)


def eval_views(crop: str) -> list[tuple[float, float, int]]:
    """(x, y, mirror) of each view, in ``MultiCrop``'s order: the centre; the centre and its
    mirror image; the four corners and the centre, then the same five of the mirrored image."""
    if crop == "center":
        return [(0.5, 0.5, 0)]
    if crop == "flip":
        return [(0.5, 0.5, 0), (0.5, 0.5, 1)]
    five = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5)]
    return [(x, y, 0) for x, y in five] + [(1.0 - x, y, 1) for x, y in five]
