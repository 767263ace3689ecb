"""The lecture's knobs: the activation, plain (shortcut-free) ResNets, AlexNet as published in
2012, training without augmentation; what changes and what stays torchvision's."""

import json
import logging

import pytest
import torch
import torchvision.models as tvm
from helpers import CONF, TINY_SAMPLE, compose_train, tiny_overrides
from omegaconf import OmegaConf
from torch import nn

from cnnzoo.data import SampleDataModule
from cnnzoo.data.images import load_image
from cnnzoo.errors import ConfigError
from cnnzoo.models import create_model
from cnnzoo.module import split_outputs
from cnnzoo.tasks.train import train

FAMILIES = ["alexnet", "vgg11_bn", "googlenet", "inception_v3", "resnet18", "resnet50",
            "densenet121", "alexnet2012"]  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_another_activation_leaves_no_relu_and_changes_the_output(name):
    """In training mode (BatchNorm on batch statistics: at initialisation GoogLeNet's eval
    output is its bias alone), dropout drawn alike."""

    def logits(net, x):
        torch.manual_seed(1)
        return split_outputs(net.train()(x))[0]

    torch.manual_seed(0)
    relu = create_model(name, num_classes=10, small_input=True)
    tanh = create_model(name, num_classes=10, small_input=True, activation="tanh")
    assert not [m for m in tanh.modules() if isinstance(m, nn.ReLU)]
    assert any(isinstance(m, nn.Tanh) for m in tanh.modules())
    assert relu.state_dict().keys() == tanh.state_dict().keys()  # the same parameters
    tanh.load_state_dict(relu.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(logits(relu, x), logits(tanh, x), rtol=1e-3, atol=1e-5)
        # and the functional ReLUs torchvision's blocks call (GoogLeNet, Inception v3 and
        # DenseNet's) became modules: with ReLU put back there, the outputs agree again
        for module in tanh.modules():
            for child, layer in module.named_children():
                if isinstance(layer, nn.Tanh):
                    setattr(module, child, nn.ReLU())
            if hasattr(module, "act"):
                module.act = nn.ReLU()
        tanh.load_state_dict(relu.state_dict())  # (BatchNorm's running statistics moved)
        torch.testing.assert_close(logits(tanh, x), logits(relu, x))


def test_relu_is_exactly_torchvision_s_network():
    torch.manual_seed(0)
    ours = create_model("resnet18", activation="relu", residual=True)
    torch.manual_seed(0)
    theirs = tvm.resnet18()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))


def test_a_plain_resnet_has_no_shortcut():
    """He et al.'s plain network: each block is its stacked layers, no identity added, no
    projection convolutions; the residual one is torchvision's block."""
    torch.manual_seed(0)
    plain = create_model("resnet18", num_classes=10, residual=False).eval()
    assert not [m for m in plain.modules() if getattr(m, "downsample", None) is not None]
    assert "layer2.0.downsample.0.weight" not in plain.state_dict()
    x = torch.randn(2, 64, 16, 16)
    block = plain.layer1[0]
    with torch.no_grad():
        stacked = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
        assert torch.equal(block(x), stacked)
        assert not torch.allclose(block(x), block.relu(stacked + x))  # (no identity added)
    deep = create_model("resnet50", num_classes=10, residual=False).eval()
    bottleneck = deep.layer1[0]
    h = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        out = bottleneck.relu(bottleneck.bn1(bottleneck.conv1(h)))
        out = bottleneck.relu(bottleneck.bn2(bottleneck.conv2(out)))
        assert torch.equal(bottleneck(h), bottleneck.relu(bottleneck.bn3(bottleneck.conv3(out))))
    with pytest.raises(ConfigError, match="model.residual='no': choose true or false"):
        create_model("resnet18", residual="no")


def test_alexnet_2012_as_published():
    net = create_model("alexnet2012")
    params = sum(p.numel() for p in net.parameters())
    assert params == 60_965_224  # the paper: "60 million parameters"
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # the two GPUs, as grouped convolutions
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in net.features) == 2
    pools = [m for m in net.features if isinstance(m, nn.MaxPool2d)]
    assert all((p.kernel_size, p.stride) == (3, 2) for p in pools)  # overlapping pooling
    shapes, x = [], torch.randn(1, 3, 224, 224)
    for layer in net.features:
        x = layer(x)
        if isinstance(layer, nn.MaxPool2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(96, 27, 27), (256, 13, 13), (256, 6, 6)]  # Figure 2's maps
    assert net(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
    small = create_model("alexnet2012", num_classes=10, small_input=True)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_knobs_are_not_torchvision_s_and_loading_its_weights_says_so(tmp_path, caplog):
    path = tmp_path / "resnet18.pth"
    torch.save(tvm.resnet18().state_dict(), path)
    with caplog.at_level(logging.WARNING):
        create_model("resnet18", weights=str(path), activation="tanh")
    assert "is not torchvision's network" in caplog.text
    with pytest.raises(ConfigError, match="'alexnet2012' is not a torchvision architecture"):
        create_model("alexnet2012", weights=str(path))
    with pytest.raises(ConfigError, match="model.activation='relu6': choose one of"):
        create_model("resnet18", activation="relu6")


def test_training_without_augmentation_takes_the_same_crop_every_epoch(cache_dir):
    root = str(next(cache_dir.glob("sample_*")))
    settings = {"num_classes": 10, "batch_size": 8, "num_workers": 0, "image_size": 32,
                "eval_resize": 36, "shuffle_seed": 3, **TINY_SAMPLE}  # fmt: skip
    dm = SampleDataModule(root, train_crop="center", hflip=False, **settings)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    crops = [train[(0, seed)][0] for seed in range(4)]  # (the seed follows the epoch)
    assert all(torch.equal(crops[0], crop) for crop in crops)
    same_as_eval = val.transform(load_image(train.index.path(0), dm.loading.decoder))
    assert torch.equal(crops[0], same_as_eval)  # the eval crop: resize 36, centre 32
    augmented = SampleDataModule(root, **settings)
    augmented.setup("fit")
    drawn = [augmented.datasets["train"][(0, seed)][0] for seed in range(4)]
    assert not all(torch.equal(drawn[0], crop) for crop in drawn)  # (the default recipe draws)


LECTURE = sorted(p.stem for p in (CONF / "experiment" / "lecture").glob("[!_]*.yaml"))  # _common


def test_the_lecture_experiments_are_the_issue_s_six():
    assert LECTURE == ["activation", "augmentation", "batchnorm", "dropout", "optimizer",
                       "residual"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", LECTURE)
def test_each_lecture_experiment_runs_one_tiny_job_of_its_sweep(name, cache_dir, tmp_path):
    """The sweep's grid (hydra.sweeper.params) composes with every value; one tiny job, with the
    last value of each parameter (tanh/sigmoid, no dropout, no augmentation, plain ResNet-34,
    VGG with BatchNorm, momentum), trains and records its training error by epoch."""
    params = OmegaConf.load(CONF / "experiment" / "lecture" / f"{name}.yaml").hydra.sweeper.params
    assert params, name
    tiny = [o for o in tiny_overrides(cache_dir, tmp_path) if not o.startswith("model.")]
    for key, values in params.items():
        for value in str(values).split(","):
            compose_train([f"experiment=lecture/{name}", *tiny, f"{key}={value}"])
    last = [f"{key}={str(values).split(',')[-1]}" for key, values in params.items()]
    short = ["logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
             "trainer.limit_val_batches=1"]  # fmt: skip
    cfg = compose_train([f"experiment=lecture/{name}", *tiny, *last, *short], out=tmp_path)
    for override in last:
        key, value = override.split("=")
        chosen = cfg.model.name if key == "model" else OmegaConf.select(cfg, key)
        if key == "optim":
            chosen = {"sgd": 0.0, "sgd_l2": 0.0, "sgd_momentum": 0.9}[value]
            value = cfg.optim.momentum
        assert str(chosen).lower() == str(value).lower(), (key, chosen, value)
    train(cfg)
    history = json.loads((tmp_path / "results.json").read_text())["val_history"]
    assert [h["epoch"] for h in history] == [0]
    assert 0 <= history[0]["train/err_top1"] <= 1
