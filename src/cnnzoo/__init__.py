"""cnnzoo: the classic ImageNet convnets as reproducible Lightning + Hydra experiments."""

__version__ = "0.1.0"
