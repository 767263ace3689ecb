"""Data: LightningDataModules over ImageFolder trees and CIFAR, transforms, the sample set."""

from cnnzoo.data.cifar import CIFARDataModule
from cnnzoo.data.datamodule import ImageFolderDataModule, SampleDataModule

__all__ = ["CIFARDataModule", "ImageFolderDataModule", "SampleDataModule"]
