"""What the tasks (eval, predict, visualize) and the callbacks need of a run's data: every
DataModule of cnnzoo implements ``RunData``, so nothing outside ``cnnzoo.data`` probes one."""

from typing import Any, Protocol

from torch import Tensor
from torch.utils.data import DataLoader

from cnnzoo.data.index import SplitIndex


class RunData(Protocol):
    has_images: bool  # False: data=synthetic (noise, to measure speed): nothing to show or score
    eval_crop: str  # the val views the run was scored with (center, flip, ten)

    def prepare_data(self) -> None: ...

    def eval_loader(self, split: str, crop: str = "center") -> DataLoader:
        """All of ``split`` in order, in batches of (N, views, 3, H, W)."""
        ...

    def view_transform(self, crop: str = "center", normalize: bool = True) -> Any:
        """One image's eval views, as the network takes them (or, unnormalised, as shown)."""
        ...

    def class_names(self) -> list[str]: ...

    def class_ids(self) -> list[str]:
        """The class folders' names (wnids for ImageNet) by class index."""
        ...

    def train_files(self) -> SplitIndex | None:
        """The training images' files, in the order ``eval_loader("train")`` reads them;
        None where there are no files (CIFAR's arrays, shards)."""
        ...

    def preview_items(self, count: int, seed: int) -> list[tuple[Tensor, int]]:
        """``count`` val images as the val loader gives them, with their labels."""
        ...

    def new_skipped(self, split: str) -> list[tuple[str, str]]:
        """(path, reason) of ``split``'s unreadable files skipped since the last call."""
        ...
