"""Name what is in photos: ``python predict.py run=outputs/train/<run> images=[cat.jpg,dir/]``.

Prints ``cat.jpg: tabby cat 0.71 | Egyptian cat 0.22 | ...`` per image (``predict.format=json``
for JSON); files that are not images are reported and skipped.
"""

import hydra
from omegaconf import DictConfig

from cnnzoo.tasks.cli import exit_on_user_error
from cnnzoo.tasks.predict import run_predict
from cnnzoo.tasks.resolvers import register_resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run_predict)(cfg)


if __name__ == "__main__":
    register_resolvers()
    main()
