"""experiment=finetune: from torchvision-format weights to a folder of other classes; a frozen
backbone stays bit-identical (BatchNorm statistics too); the head's lr multiplier; eval,
predict and export of the fine-tuned run with its own class names."""

import json
import shutil

import pytest
import torch
from helpers import compose_train
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from cnnzoo.build import build_module
from cnnzoo.errors import ConfigError, DataError
from cnnzoo.models import create_model
from cnnzoo.tasks.resume import read_resume
from cnnzoo.tasks.train import train


@pytest.fixture(scope="module")
def photos(cache_dir, tmp_path_factory):
    """ants/ and bees/: two of the sample set's classes under other names."""
    root = tmp_path_factory.mktemp("photos")
    sample = next(cache_dir.glob("sample_*"))
    for split in ("train", "val"):
        wnids = sorted(p.name for p in (sample / split).iterdir())[:2]
        for name, wnid in zip(("ants", "bees"), wnids, strict=True):
            shutil.copytree(sample / split / wnid, root / split / name)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An ImageNet-shaped (1000-class) resnet18 state dict, as torchvision publishes them."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(create_model("resnet18", num_classes=1000).state_dict(), path)
    return path


def finetune(photos, weights, out, *extra):
    return [f"data.root={photos}", f"model.weights={weights}",  # (data.num_classes: the folders)
            "experiment=finetune", "trainer=cpu", "data.batch_size=8", "data.num_workers=0",
            "model.input_size=32", "model.eval_resize=36", "trainer.max_epochs=1",
            "trainer.limit_train_batches=3", "logger=none", "callbacks.progress_bar=null",
            "callbacks.prediction_grid=null", f"paths.output_dir={out}", *extra]  # fmt: skip


def test_a_linear_probe_changes_only_the_classifier(photos, weights, tmp_path, offline_env):
    out = tmp_path / "probe"
    train(compose_train(finetune(photos, weights, out, "model.freeze=backbone"), out=out))
    start = torch.load(weights, weights_only=True)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    trained = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()}
    kept = [k for k in start if trained[k].shape == start[k].shape]  # all but the new head
    changed = [k for k in kept if not torch.equal(start[k], trained[k])]
    assert changed == [], changed  # BatchNorm running statistics included
    assert trained["fc.weight"].shape == (2, 512)  # the new head, which trained:
    assert ckpt["optimizer_states"][0]["state"]  # (an optimiser state exists for it)
    assert len(ckpt["optimizer_states"][0]["param_groups"][0]["params"]) == 2  # fc w and b


def test_another_runs_checkpoint_is_taken_as_weights(photos, weights, tmp_path):
    """model.weights=RUN/checkpoints/best.ckpt (fine-tuning from one's own run) was refused
    ("export one with python -m cnnzoo.export"); its network's weights are taken, the head
    re-initialised for the new classes, and another architecture's checkpoint still refused."""
    start = torch.load(weights, weights_only=True)
    ckpt = tmp_path / "best.ckpt"  # a Lightning checkpoint of a 1000-class cnnzoo resnet18
    torch.save({"state_dict": {f"net.{k}": v for k, v in start.items()}, "epoch": 3}, ckpt)
    net = build_module(compose_train(finetune(photos, ckpt, tmp_path))).net
    assert torch.equal(net.conv1.weight, start["conv1.weight"])
    assert torch.equal(net.layer4[1].bn2.running_var, start["layer4.1.bn2.running_var"])
    assert net.fc.weight.shape == (2, 512)
    with pytest.raises(InstantiationException) as e:  # (the one line: tasks.cli unwraps it)
        build_module(compose_train(finetune(photos, ckpt, tmp_path, "model=resnet34")))
    assert "do not fit model 'resnet34'" in str(e.value.__cause__)


def test_fine_tuning_without_weights_is_refused(photos, weights, tmp_path, capsys):
    """A forgotten model.weights= trained the fine-tuning recipe (lr 0.001) from random weights."""
    args = [a for a in finetune(photos, weights, tmp_path) if not a.startswith("model.weights=")]
    with pytest.raises(SystemExit):
        train(compose_train(args, out=tmp_path))
    assert "error: this recipe fine-tunes trained weights: give model.weights=FILE.pth" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "checkpoints").exists()
    cfg = compose_train([*args, "requires_weights=false"], out=tmp_path / "scratch")
    assert cfg.model.weights is None and not cfg.requires_weights  # (trains: not run here)


def test_only_the_heads_group_has_the_multiplied_lr(photos, weights, tmp_path):
    cfg = compose_train(finetune(photos, weights, tmp_path, "optim.head_lr_mult=10",
                                 "model.lr=0.01"), out=tmp_path)  # fmt: skip
    module = build_module(cfg)
    optimizer = module.configure_optimizers()["optimizer"]
    lrs = [(len(g["params"]), g["lr"]) for g in optimizer.param_groups]
    assert lrs == [(60, 0.01), (2, pytest.approx(0.1))]  # backbone, then fc weight and bias


def test_a_finetuned_run_evaluates_predicts_and_exports_with_its_classes(
    photos, weights, tmp_path, offline_env
):
    from cnnzoo.export import export
    from cnnzoo.tasks.evaluate import run_eval
    from cnnzoo.tasks.predict import run_predict
    from cnnzoo.tasks.visualize import run_visualize

    out = tmp_path / "run"
    cfg = compose_train(finetune(photos, weights, out), out=out)
    (out / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # as Hydra saves it: before training
    assert cfg.data.num_classes is None  # data=imagefolder's: one class per folder
    train(cfg)
    assert cfg.data.num_classes is None  # the caller's config is not written into
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["hyper_parameters"]["num_classes"] == 2  # counted, and the model's head followed
    assert last["state_dict"]["net.fc.weight"].shape == (2, 512)
    scored = run_eval(compose_train([f"run={out}"], out=tmp_path / "eval", config="eval"))
    assert scored["images"] == 8 and {p["true"] for p in scored["most_confused"]} <= {
        "ants",
        "bees",
    }
    image = next((photos / "val" / "bees").iterdir())
    (answer,) = run_predict(compose_train([f"run={out}", f"images=[{image}]"], config="predict"))
    assert {t["name"] for t in answer["top"]} == {"ants", "bees"}
    # The run folder copied to another machine, without the photos it was trained on: its
    # checkpoint names the classes, for predict.py and the Grad-CAM view.
    away = tmp_path / "copied-run"
    shutil.copytree(out, away)
    saved = OmegaConf.load(out / ".hydra" / "config.yaml")  # (num_classes null: the checkpoint's)
    OmegaConf.save(OmegaConf.merge(saved, {"data": {"root": str(tmp_path / "not-here")}}),
                   away / ".hydra" / "config.yaml")  # fmt: skip
    (answer,) = run_predict(compose_train([f"run={away}", f"images=[{image}]"], config="predict"))
    assert {t["name"] for t in answer["top"]} == {"ants", "bees"}
    visualize = compose_train([f"run={away}", "what=gradcam", f"images=[{image}]"],
                              config="visualize")  # fmt: skip
    (picture,) = run_visualize(visualize)
    assert picture == away / "visualize" / "gradcam.png"
    path = export({"run": str(out), "format": "state_dict", "ckpt": "best", "ema": "false",
                   "overwrite": "false"})  # fmt: skip
    assert torch.load(path, weights_only=True)["fc.weight"].shape == (2, 512)
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished"
    # resume= and ckpt_path= with data.num_classes=null: as many as the checkpoint's
    again = [*finetune(photos, weights, out), f"ckpt_path={out}/checkpoints/last.ckpt"]
    resumed = compose_train(again)
    assert read_resume(resumed).num_classes == 2 and resumed.data.num_classes is None  # (kept)
    with pytest.raises(ConfigError, match="checkpoint of num_classes 2 but this run has 3"):
        read_resume(compose_train([*again, "data.num_classes=3"]))


def test_more_classes_than_folders_names_the_count(photos, tmp_path):
    from cnnzoo.build import build_datamodule

    cfg = compose_train(["data=imagefolder", f"data.root={photos}", "data.num_classes=3"])
    with pytest.raises(DataError, match=r"has 2 class folders but data.num_classes=3\. Point "
                       r"data.root at the full tree, or set data.num_classes=null \(one class "
                       r"per folder\) or 2\."):  # fmt: skip
        build_datamodule(cfg).setup("fit")


def test_one_class_folder_is_refused_with_what_to_add(photos, tmp_path):
    """A tree of one class folder counted data.num_classes=1, and torchmetrics refused it with a
    ValueError traceback through Hydra."""
    one = tmp_path / "one"
    for split in ("train", "val"):
        shutil.copytree(photos / split / "ants", one / split / "ants")
    cfg = compose_train(["data=imagefolder", f"data.root={one}"])
    with pytest.raises(InstantiationException) as e:  # (the one line: tasks.cli unwraps it)
        build_module(cfg)
    assert isinstance(e.value.__cause__, ConfigError)
    assert "data.num_classes=1: a classifier needs 2 classes" in str(e.value.__cause__)


def test_imagefolder_asks_for_its_own_root_and_counts_its_classes(monkeypatch):
    """Its config once said ``???`` for both, which a merge over data=imagenet's values ignores:
    ImageNet's 1000 classes (and IMAGENET_ROOT) were taken instead."""
    monkeypatch.setenv("IMAGENET_ROOT", "/data/imagenet")
    data = compose_train(["data=imagefolder"]).data
    assert data.num_classes is None and data.root is None


def test_fewer_photos_than_one_batch_is_refused(photos, weights, tmp_path, capsys):
    """16 training photos and the recipe's batch of 64: the last partial batch is dropped, so
    no step trained and a random network was tested and recorded as the run's result."""
    with pytest.raises(SystemExit):
        train(compose_train(finetune(photos, weights, tmp_path, "data.batch_size=64"),
                            out=tmp_path))  # fmt: skip
    assert "training has 16 images" in (err := capsys.readouterr().err)
    assert "fewer than one batch (data.batch_size=64, 64 per device)" in err
    assert "Set data.batch_size=16 or less." in err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(("batch", "fits"), [(16, True), (32, False)])
def test_one_batch_per_rank_is_the_least(photos, batch, fits):
    from helpers import place, tiny_datamodule

    dm = tiny_datamodule(photos, num_classes=2, batch_size=batch, wnids=None)
    dm.setup("fit")
    place(dm, world_size=2, rank=1)  # 8 photos each; 16 or 8 per device
    if fits:
        assert len(dm.train_dataloader()) == 1
    else:
        with pytest.raises(DataError, match="Set data.batch_size=16 or less"):
            dm.train_dataloader()
