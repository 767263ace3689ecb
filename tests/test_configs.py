"""Every option of every config group composes, resolves and builds what it describes."""

import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from helpers import CONF, compose_train, zoo
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnzoo.build import (
    build_datamodule,
    build_module,
    build_net,
    check_input_size,
    check_options,
)
from cnnzoo.data import ImageFolderDataModule
from cnnzoo.errors import ConfigError
from cnnzoo.models import create_model
from cnnzoo.trainer import instantiate_group

GROUPS = [
    "model",
    "data",
    "optim",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_the_issue_options_exist():
    names = set(OPTIONS)
    for option in [
        ("model", "resnet18"),
        ("data", "sample"),
        ("data", "imagenet"),
        ("optim", "sgd"),
        ("optim", "sgd_momentum"),
        ("scheduler", "none"),
        ("scheduler", "step"),
        ("scheduler", "cosine"),
        ("trainer", "default"),
        ("trainer", "cpu"),
        ("trainer", "gpu"),
        ("logger", "wandb"),
        ("logger", "csv"),
        ("logger", "none"),
        ("experiment", "quickstart"),
        ("optim", "sgd_l2"),
        ("optim", "nesterov"),
        ("optim", "rmsprop"),
        ("optim", "adamw"),
        ("scheduler", "multistep"),
        ("scheduler", "plateau"),
        ("scheduler", "exponential"),
    ]:
        assert option in names


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_resolves(group, option, tmp_path):
    cfg = compose_train([f"{group}={option}"], out=tmp_path)
    OmegaConf.resolve(cfg)  # every interpolation has a value
    assert cfg.model.num_classes == cfg.data.num_classes
    assert cfg.data.image_size == cfg.model.input_size
    assert cfg.data.get("eval_resize", cfg.model.eval_resize) == cfg.model.eval_resize
    if cfg.optim.optimizer._target_ != "torch.optim.AdamW":  # AdamW brings its own lr
        assert cfg.optim.lr == cfg.model.lr
    check_options(cfg.data, "data")  # the DataModule takes every option its config gives
    check_options(cfg.module, "module")


def test_an_option_the_data_choice_does_not_take_is_named_with_the_fix(tmp_path):
    """quickstart sets folder-loader options; data=synthetic has no such options."""
    cfg = compose_train(["experiment=quickstart", "data=synthetic"], out=tmp_path)
    with pytest.raises(ConfigError) as e:
        build_datamodule(cfg)
    assert "does not take data.num_workers, data.train_crop_scale" in str(e.value)
    assert "Drop them with ~data.num_workers ~data.train_crop_scale;" in str(e.value)
    dropped = ["~data.num_workers", "~data.train_crop_scale"]
    cfg = compose_train(["experiment=quickstart", "data=synthetic", *dropped], out=tmp_path)
    assert build_datamodule(cfg).batch_size == 32


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ("cifar10", "cifar10 comes as arrays in memory"),
        ("synthetic", "data=synthetic has no input"),
    ],
)
def test_dali_on_data_without_image_files_is_named_with_the_fix(tmp_path, data, said):
    """(Hydra's "Key 'loader' is not in struct" it was, in four lines.)"""
    cfg = compose_train([f"data={data}", "data.loader=dali"], out=tmp_path)
    with pytest.raises(InstantiationException) as e:  # (train.py prints its cause, one line)
        build_datamodule(cfg)
    assert isinstance(e.value.__cause__, ConfigError)
    assert str(e.value.__cause__).startswith(f"data.loader=dali: {said}")
    assert compose_train([f"data={data}"], out=tmp_path).data.loader == "workers"


def test_parts_build_from_the_default_config(tmp_path, offline_env):
    cfg = compose_train(["data.num_workers=0"], out=tmp_path)
    assert isinstance(instantiate(cfg.data), ImageFolderDataModule)
    net = build_net(cfg.model)
    assert sum(p.numel() for p in net.parameters()) == 11_181_642  # resnet18, 10 classes
    module = build_module(cfg)
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 1e-4
    callbacks = instantiate_group(cfg.callbacks)
    assert {type(c).__name__ for c in callbacks} == {
        "RunCheckpoint",
        "LearningRateMonitor",
        "RichProgressBar",
        "Throughput",
        "ResumeState",
        "BadFileReport",
        "WandbDashboard",
        "PredictionGrid",
        "SlurmRequeue",
    }
    assert isinstance(instantiate(cfg.trainer, logger=False), pl.Trainer)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("none", None),
        ("step", torch.optim.lr_scheduler.StepLR),
        ("cosine", torch.optim.lr_scheduler.CosineAnnealingLR),
    ],
)
def test_scheduler_options(option, expected, tmp_path):
    cfg = compose_train([f"scheduler={option}"], out=tmp_path)
    configured = build_module(cfg).configure_optimizers()
    if expected is None:
        assert isinstance(configured, torch.optim.Optimizer)
    else:
        assert isinstance(configured["lr_scheduler"]["scheduler"], expected)
        assert configured["lr_scheduler"]["interval"] == "epoch"


def test_plain_sgd_has_no_momentum_and_no_decay(tmp_path):
    cfg = compose_train(["optim=sgd"], out=tmp_path)
    optimizer = build_module(cfg).configure_optimizers()["optimizer"]
    assert optimizer.defaults["momentum"] == 0.0 and optimizer.defaults["weight_decay"] == 0.0


def test_loggers(tmp_path, offline_env):
    assert instantiate_group(compose_train(["logger=none"], out=tmp_path).get("logger")) == []
    (csv,) = instantiate_group(compose_train(["logger=csv"], out=tmp_path).logger)
    assert type(csv).__name__ == "ResumableCSVLogger"
    (wandb,) = instantiate_group(compose_train(["logger=wandb"], out=tmp_path).logger)
    assert isinstance(wandb, pl.loggers.WandbLogger)
    (tb,) = instantiate_group(compose_train(["logger=tensorboard"], out=tmp_path).logger)
    assert isinstance(tb, pl.loggers.TensorBoardLogger)
    both = instantiate_group(compose_train(["logger=[csv,tensorboard]"], out=tmp_path).logger)
    assert [type(x).__name__ for x in both] == ["ResumableCSVLogger", "TensorBoardLogger"]


def test_quickstart_experiment_values(tmp_path):
    cfg = compose_train(["experiment=quickstart"], out=tmp_path)
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.data._target_.endswith("SampleDataModule")
    assert cfg.data.image_size == 48 and cfg.data.batch_size == 32
    assert cfg.scheduler.scheduler._target_.endswith("CosineAnnealingLR")


def test_unknown_model_lists_the_choices(tmp_path):
    with pytest.raises(ConfigCompositionException) as e:
        compose_train(["model=resnet9"], out=tmp_path)
    assert "resnet18" in str(e.value)


@pytest.mark.parametrize("name", zoo([p.stem for p in sorted((CONF / "model").glob("*.yaml"))]))
def test_every_model_config_builds_its_architecture(name, tmp_path):
    cfg = compose_train([f"model={name}"], out=tmp_path)
    assert cfg.model.name == name
    with torch.device("meta"):
        net, reference = build_net(cfg.model), create_model(name, num_classes=10)
    assert net.state_dict().keys() == reference.state_dict().keys()
    plain = name.startswith("alexnet") or (name.startswith("vgg") and not name.endswith("_bn"))
    assert cfg.optim.lr == (0.01 if plain else 0.1)  # torchvision's (and AlexNet's paper's)
    size = (299, 342) if name == "inception_v3" else (224, 256)
    assert (cfg.data.image_size, cfg.data.eval_resize) == size


def test_an_input_too_small_for_the_architecture_fails_early_with_the_fix(tmp_path):
    cfg = compose_train(["model=inception_v3", "model.input_size=48"], out=tmp_path)
    with pytest.raises(ConfigError, match="'inception_v3' cannot take 48 px.*small_input=true"):
        check_input_size(cfg.model)
    check_input_size(
        compose_train(
            ["model=inception_v3", "model.input_size=48", "model.small_input=true"], out=tmp_path
        ).model
    )
    check_input_size(compose_train(["model=inception_v3"], out=tmp_path).model)  # 299 px


@pytest.mark.parametrize("name", zoo([p.stem for p in sorted((CONF / "model").glob("*.yaml"))]))
def test_a_model_config_gives_its_builder_exactly_the_builder_s_arguments(name, tmp_path):
    """``model.net`` holds the builder's arguments and nothing the rest of the run reads
    (input size, lr, ...), and a value overridden at the top of ``model`` reaches it."""
    cfg = compose_train([f"model={name}", "model.small_input=true"], out=tmp_path)
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    assert net.pop("_target_") == "cnnzoo.models.create_model"
    assert net["name"] == name and net["small_input"] is True
    run_keys = {"input_size", "eval_resize", "lr", "aux_weights", "channels_last", "compile"}
    assert not run_keys & set(net), run_keys & set(net)
    assert set(net) <= set(cfg.model) - {"net"}  # each argument is a key users can override


@pytest.mark.slow
def test_importing_the_package_registers_nothing():
    """``import cnnzoo.models`` (pure torch.nn), ``cnnzoo.data``, ``cnnzoo.module`` and
    ``cnnzoo.build`` register no resolver and add no warnings filter; ``cnnzoo.tasks`` (the
    Hydra layer) registers the resolvers conf/ uses."""
    code = """
import sys, warnings
import cnnzoo.models
assert "omegaconf" not in sys.modules and "pytorch_lightning" not in sys.modules
import pytorch_lightning, torchmetrics, torchvision, hydra  # (their own filters)
before = list(warnings.filters)
import cnnzoo, cnnzoo.data, cnnzoo.module, cnnzoo.build
from omegaconf import OmegaConf
assert warnings.filters == before, warnings.filters[: len(warnings.filters) - len(before)]
assert not OmegaConf.has_resolver("unique_dir")
import cnnzoo.tasks
assert OmegaConf.has_resolver("unique_dir") and OmegaConf.has_resolver("slurm_tasks")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_build_door_draws_the_initial_weights_a_plain_builder_does(tmp_path):
    """Building the module consumes the seeded RNG exactly as building the network alone: the
    same seed gives the same initial weights (a second, throw-away build would shift them and
    change every seeded run)."""
    cfg = compose_train(["model=resnet18", "data.num_classes=10"], out=tmp_path)
    torch.manual_seed(3)
    module = build_module(cfg)
    torch.manual_seed(3)
    reference = create_model("resnet18", num_classes=10)
    ours = module.net.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in reference.state_dict().items())


def test_data_configs_set_no_model_keys_and_the_model_follows_the_images(tmp_path):
    """A data config says what the images are (``input``: CIFAR's 32 px, small-input stem);
    the model's sizes and stem follow by interpolation, whatever the model (inception_v3's
    own 299 too); a command line still overrides them."""
    for path in sorted((CONF / "data").glob("*.yaml")):
        assert "model" not in OmegaConf.load(path), path.name
    for model in ("resnet18", "inception_v3"):
        cfg = compose_train([f"model={model}", "data=cifar10"], out=tmp_path)
        assert (cfg.model.input_size, cfg.model.eval_resize, cfg.model.small_input) == (
            32,
            32,
            True,
        )
        assert cfg.model.net.small_input is True and cfg.data.image_size == 32
    cfg = compose_train(["data=cifar10", "model.small_input=false"], out=tmp_path)
    assert cfg.model.small_input is False
    assert compose_train(["model=inception_v3"], out=tmp_path).model.input_size == 299
