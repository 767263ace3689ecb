"""Each paper recipe composes and holds the paper's values (the table below, from the papers)."""

import pytest
from helpers import CONF, compose_train
from omegaconf import OmegaConf

# experiment: (model, optimiser, lr, momentum, weight decay, batch, scheduler, schedule values,
#              epochs, extra checks)
RECIPES = {
    "alexnet_krizhevsky2012": ("alexnet2012", "SGD", 0.01, 0.9, 5e-4, 128, "ReduceLROnPlateau",
                               {"factor": 0.1}, 90, {"model.dropout": 0.5,
                               "data.train_crop": "alexnet", "data.lighting": 0.1}),
    "vgg16_simonyan2014": ("vgg16", "SGD", 0.01, 0.9, 5e-4, 256, "ReduceLROnPlateau",
                           {"factor": 0.1}, 74, {"model.dropout": 0.5, "data.train_crop": "vgg",
                           "data.scale_jitter": [256, 512], "data.lighting": 0.1}),
    "googlenet_szegedy2014": ("googlenet", "SGD", 0.1, 0.9, 1e-4, 256, "StepLR",
                              {"step_size": 8, "gamma": 0.96}, 90,
                              {"model.aux_weights": [0.3, 0.3], "model.dropout": 0.4,
                               "model.dropout_aux": 0.7, "data.train_crop_scale": [0.08, 1.0],
                               "callbacks.ema._target_": "cnnzoo.callbacks.EMA"}),
    "inception_v3_szegedy2016": ("inception_v3", "RMSprop", 0.045, 0.0, 4e-5, 256, "StepLR",
                                 {"step_size": 2, "gamma": 0.94}, 100,
                                 {"label_smoothing": 0.1, "optim.alpha": 0.9, "optim.eps": 1.0,
                                  "trainer.gradient_clip_val": 2.0, "data.image_size": 299}),
    "resnet50_he2016": ("resnet50", "SGD", 0.1, 0.9, 1e-4, 256, "ReduceLROnPlateau",
                        {"factor": 0.1}, 120, {"data.train_crop": "vgg",
                        "data.scale_jitter": [256, 480], "data.lighting": 0.1}),
    "densenet121_huang2017": ("densenet121", "SGD", 0.1, 0.9, 1e-4, 256, "MultiStepLR",
                              {"milestones": [30, 60], "gamma": 0.1}, 90,
                              {"optim.nesterov": True}),
    "resnet50_torchvision": ("resnet50", "SGD", 0.1, 0.9, 1e-4, 256, "StepLR",
                             {"step_size": 30, "gamma": 0.1}, 90,
                             {"data.image_size": 224, "data.eval_resize": 256}),
}  # fmt: skip


def test_every_experiment_file_is_in_the_table():
    files = {p.stem for p in (CONF / "experiment").glob("*.yaml")} - {"quickstart", "finetune"}
    assert files == set(RECIPES)


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_values(name, tmp_path):
    model, optim, lr, momentum, wd, batch, sched, sched_values, epochs, extra = RECIPES[name]
    cfg = compose_train([f"experiment={name}"], out=tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.model.name == model
    assert cfg.optim.optimizer._target_ == f"torch.optim.{optim}"
    assert cfg.optim.lr == pytest.approx(lr)
    assert cfg.optim.momentum == momentum and cfg.optim.weight_decay == pytest.approx(wd)
    assert cfg.data.batch_size == batch and cfg.trainer.max_epochs == epochs
    assert cfg.scheduler.scheduler._target_ == f"torch.optim.lr_scheduler.{sched}"
    for key, value in sched_values.items():
        assert cfg.scheduler.scheduler[key] == value
    for key, value in extra.items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.data._target_.endswith("ImageFolderDataModule")  # the real ImageNet


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_builds_its_optimiser_and_schedule(name, tmp_path):
    import torch

    from cnnzoo.build import build_module

    cfg = compose_train([f"experiment={name}"], out=tmp_path)
    with torch.device("meta"):  # shapes only: no memory for 138M VGG weights
        configured = build_module(cfg).configure_optimizers()
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert type(scheduler).__name__ == RECIPES[name][6]
    assert configured["optimizer"].param_groups[0]["lr"] == pytest.approx(RECIPES[name][2])
