"""Score a network on ImageNet's val split: ``python eval.py run=outputs/train/<run>``.

Writes ``eval.json`` and ``per_class.csv`` to a folder of its own under ``outputs/eval/``.
"""

import hydra
from omegaconf import DictConfig

from cnnzoo.tasks.cli import exit_on_user_error
from cnnzoo.tasks.evaluate import run_eval
from cnnzoo.tasks.launch import main_argv


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    return exit_on_user_error(run_eval, in_log_file=True)(cfg)["acc_top1"]


if __name__ == "__main__":
    main_argv()
    main()
