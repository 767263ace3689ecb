"""Data: LightningDataModules over ImageFolder trees, transforms, and the built-in sample set."""

from cnnzoo.data.datamodule import ImageFolderDataModule, SampleDataModule

__all__ = ["ImageFolderDataModule", "SampleDataModule"]
