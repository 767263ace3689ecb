"""Train a network: ``python train.py model=resnet18 optim=sgd_momentum`` (see README)."""

import hydra
from omegaconf import DictConfig

from cnnzoo.tasks.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
