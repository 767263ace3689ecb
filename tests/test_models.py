"""The architecture zoo: published facts, every model trainable, torchvision compatibility."""

import argparse
from types import SimpleNamespace

import pytest
import torch
import torchvision.models as tvm
from helpers import zoo

from cnnzoo.errors import ConfigError
from cnnzoo.models import create_model, list_models
from cnnzoo.models.stats import count_gmacs, count_params, model_stats, published_weights
from cnnzoo.models.weights import read_torch_file
from cnnzoo.module import ClassificationModule, split_outputs

ALL = [
    "alexnet", "densenet121", "densenet161", "densenet169", "densenet201", "googlenet",
    "inception_v3", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
]  # fmt: skip
AUX_HEADS = {"googlenet": 2, "inception_v3": 1}


def test_registry_holds_the_twenty_networks_and_alexnet_as_published():
    assert list_models() == sorted([*ALL, "alexnet2012"])


@pytest.mark.parametrize("name", zoo(ALL))
def test_parameters_and_macs_match_torchvision_published(name):
    stats = model_stats(name)
    assert stats.params == stats.published_params
    assert stats.gmacs == pytest.approx(stats.published_gmacs, rel=0.02)


def test_published_counts_of_the_inception_family():
    assert count_params("googlenet", aux_logits=False) == 6_624_904
    assert count_params("googlenet") == 13_004_888  # with both auxiliary heads
    assert count_params("inception_v3") == 27_161_264  # with its auxiliary head
    assert count_gmacs("resnet50", 224) == pytest.approx(4.089, rel=0.001)


@pytest.mark.parametrize("name", zoo(ALL))
def test_every_model_trains_at_small_input(name):
    """Train mode: (main, aux...) outputs, finite, and every parameter gets a gradient."""
    torch.manual_seed(0)
    net = create_model(name, num_classes=10, small_input=True)
    images = torch.randn(2, 3, 32, 32)
    main, aux = split_outputs(net.train()(images))
    assert main.shape == (2, 10) and len(aux) == AUX_HEADS.get(name, 0)
    loss = sum(o.logsumexp(1).mean() for o in [main, *aux])
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    with torch.no_grad():
        logits = net.eval()(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "inception_v3", "resnet18", "vgg11"])
def test_imagenet_stem_runs_at_its_minimum_size(name):
    if name == "inception_v3":  # its ImageNet stem needs 75 px at least, aux head off
        net = create_model(name, num_classes=10, aux_logits=False).eval()
        assert net(torch.randn(1, 3, 75, 75)).shape == (1, 10)
    else:
        assert create_model(name, num_classes=10).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize(
    "name", ["alexnet", "vgg11_bn", "googlenet", "inception_v3", "resnet18", "densenet121"]
)
def test_state_dict_is_torchvision_s(name):
    ours = create_model(name, num_classes=10).state_dict()
    kwargs = {"aux_logits": True, "init_weights": True} if name in AUX_HEADS else {}
    theirs = getattr(tvm, name)(num_classes=10, **kwargs).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_aux_heads_switch_off():
    net = create_model("googlenet", num_classes=10, aux_logits=False).train()
    assert isinstance(net(torch.randn(2, 3, 64, 64)), torch.Tensor)


def test_unknown_model_and_unknown_option_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model 'resnet9'; choose one of: alexnet"):
        create_model("resnet9")
    with pytest.raises(ConfigError, match="model 'alexnet'.*zero_init_residual"):
        create_model("alexnet", zero_init_residual=True)


def test_zero_init_residual():
    net = create_model("resnet18", zero_init_residual=True)
    assert not net.layer1[0].bn2.weight.any()


def test_weights_file_loads_and_a_new_class_count_replaces_the_classifier(tmp_path, caplog):
    source = create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    same = create_model("resnet18", num_classes=1000, weights=str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    with caplog.at_level("WARNING"):
        tuned = create_model("resnet18", num_classes=10, weights=str(path))
    assert torch.equal(tuned.conv1.weight, source.conv1.weight)
    assert tuned.fc.weight.shape == (10, 512)
    assert "1000 classes in the file, 10 here" in caplog.text


def test_weights_of_another_architecture_name_both(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18").state_dict(), path)
    with pytest.raises(ConfigError, match=r"do not fit model 'resnet34'.*another architecture"):
        create_model("resnet34", weights=str(path))
    with pytest.raises(ConfigError, match="no such file"):
        create_model("resnet18", weights=str(tmp_path / "missing.pth"))


def test_a_file_that_is_not_a_weights_file_is_named(tmp_path):
    """A results.json or an HTML page saved as .pth, and a pickle that needs unsafe loading:
    one line naming the file and what it is, without torch's advice to load it unsafely."""
    page = tmp_path / "resnet18.pth"
    page.write_text("<html>403 Forbidden</html>")
    with pytest.raises(ConfigError) as e:
        create_model("resnet18", weights=str(page))
    assert str(e.value) == (
        f"model.weights={page} is not a PyTorch checkpoint or state dict (it begins "
        "b'<html>403 Forbid'): give a .ckpt of a run's checkpoints/ folder, or a .pth written "
        "by torch.save."
    )
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": argparse.Namespace(a=1)}, unsafe)
    with pytest.raises(
        ConfigError, match=r"cannot be loaded safely \(UnpicklingError: .*Namespace"
    ):
        read_torch_file(unsafe)  # (torch's own message begins "Weights only load failed ...")
    with pytest.raises(ConfigError, match="^the checkpoint .*missing.ckpt: cannot read it"):
        read_torch_file(tmp_path / "missing.ckpt")
    torch.save({"a": torch.ones(2)}, tmp_path / "fine.pt")
    assert torch.equal(read_torch_file(tmp_path / "fine.pt")["a"], torch.ones(2))
    cut = tmp_path / "cut.ckpt"  # (torch: "... failed finding central directory ... o)")
    cut.write_bytes((tmp_path / "fine.pt").read_bytes()[:500])
    with pytest.raises(ConfigError, match=r"^the checkpoint .*cut.ckpt is cut short \(500 bytes"):
        read_torch_file(cut)


def test_pretrained_uses_the_hub_cache_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(ConfigError, match="cnnzoo downloads nothing") as e:
            create_model("resnet18", pretrained=True)
        assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in str(e.value)
        assert published_weights("resnet18").url in str(e.value)
        cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
        cached.parent.mkdir(parents=True)
        source = create_model("resnet18")
        torch.save(source.state_dict(), cached)
        loaded = create_model("resnet18", pretrained=True)
        assert torch.equal(loaded.fc.weight, source.fc.weight)
    finally:
        torch.hub.set_dir(str(tmp_path / "unused"))


def _module(**kwargs) -> ClassificationModule:
    net = create_model("resnet18", num_classes=10, small_input=True)
    return ClassificationModule(
        net=net, optimizer=torch.optim.SGD, num_classes=10, arch="resnet18", **kwargs
    )


def test_compile_keeps_plain_state_dict_keys():
    assert list(_module(compile=True).state_dict()) == list(_module().state_dict())
    assert not any("_orig_mod" in k for k in _module(compile=True).state_dict())


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    plain = _module().eval()
    nhwc = _module(channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(images), plain(images), rtol=1e-4, atol=1e-4)


def test_checkpoint_of_another_architecture_is_refused_naming_both():
    module = ClassificationModule(
        net=create_model("resnet34", num_classes=10),
        optimizer=torch.optim.SGD,
        num_classes=10,
        arch="resnet34",
    )
    checkpoint = {"hyper_parameters": {"arch": "resnet18", "num_classes": 10}}
    with pytest.raises(
        ConfigError,
        match="arch 'resnet18' but this run's model has arch 'resnet34'; choose model=resnet18",
    ):
        module.on_load_checkpoint(checkpoint)


def test_dropout_acts_in_training_mode_only():
    torch.manual_seed(0)
    net = create_model("alexnet", num_classes=10, small_input=True, dropout=0.5)
    images = torch.randn(2, 3, 32, 32)
    net.train()
    assert not torch.equal(net(images), net(images))  # a new dropout mask each pass
    net.eval()
    assert torch.equal(net(images), net(images))


@pytest.mark.parametrize(("device", "expected"), [("cpu", False), ("cuda", True)])
def test_channels_last_auto_follows_the_device(device, expected):
    module = _module(channels_last=None)
    module.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    module.setup("fit")
    conv = module.net.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is expected
    assert (module.memory_format == torch.channels_last) is expected
