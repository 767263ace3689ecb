"""What a network learned: ``python visualize.py run=outputs/train/<run> what=filters``.

``filters``: the first conv layer's kernels as a colour grid; ``confusion``: the val split's
confusion matrix and per-class top-1. PNGs go to ``RUN/visualize/``.
"""

import hydra
from omegaconf import DictConfig

from cnnzoo.tasks.cli import exit_on_user_error
from cnnzoo.tasks.resolvers import register_resolvers
from cnnzoo.tasks.visualize import run_visualize


@hydra.main(version_base="1.3", config_path="conf", config_name="visualize")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run_visualize)(cfg)


if __name__ == "__main__":
    register_resolvers()
    main()
