"""Train a network: ``python train.py model=resnet18 optim=sgd_momentum`` (see README).

``python train.py resume=outputs/train/<run>`` continues a run from its last checkpoint.
"""

import sys

import hydra
from omegaconf import DictConfig

from cnnzoo.tasks.launch import main_argv
from cnnzoo.tasks.sweep import SweepJobs
from cnnzoo.tasks.train import train

SWEEP = SweepJobs()  # the failed jobs of a sweep (-m), for the exit status


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg, SWEEP)


if __name__ == "__main__":
    main_argv()
    main()
    sys.exit(SWEEP.exit_status())
