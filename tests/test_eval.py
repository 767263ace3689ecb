"""eval.py, predict.py and export: score a run the ILSVRC way, name what is in photos."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import compose_train, run_train, tiny_overrides
from PIL import Image

from cnnzoo.data.transforms import MultiCrop
from cnnzoo.errors import ConfigError, UserError
from cnnzoo.export import main as export_main
from cnnzoo.tasks.evaluate import run_eval
from cnnzoo.tasks.predict import predict_probabilities, run_predict
from cnnzoo.tasks.restore import load_module

pytestmark = pytest.mark.xdist_group("eval")  # its module fixtures are made once

ENV = {**os.environ, "WANDB_MODE": "disabled"}


@pytest.fixture(scope="module")
def trained(cache_dir, tmp_path_factory) -> Path:
    """One tiny resnet18 run (ImageNet stem, so its state dict is torchvision's)."""
    cwd = tmp_path_factory.mktemp("trained")
    proc = run_train([*tiny_overrides(cache_dir, cwd), "logger=none"], ENV, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (cwd / "outputs" / "train").iterdir()
    return run


@pytest.mark.slow
def test_eval_of_a_run_reproduces_its_test_metrics_exactly(trained, tmp_path):
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    proc = run_train([f"run={trained}"], ENV, cwd=tmp_path, script="eval.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (tmp_path / "outputs" / "eval").iterdir()
    result = json.loads((folder / "eval.json").read_text())
    trained_metrics = json.loads((trained / "results.json").read_text())["metrics"]
    assert result["acc_top1"] == trained_metrics["test/acc_top1"]
    assert result["acc_top5"] == trained_metrics["test/acc_top5"]
    assert result["images"] == 40 and result["crop"] == "center"
    assert result["checkpoint"] == str(trained / "checkpoints" / "best.ckpt")
    rows = (folder / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class,wnid,name,images,acc_top1,acc_top5" and len(rows) == 11
    assert rows[1].startswith("0,n01440764,tench,4,")
    assert "top-1 acc" in proc.stdout
    after = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    assert after == before  # the training run's files are untouched


@pytest.mark.slow
def test_eval_overrides_are_read_as_hydra_reads_them(trained, tmp_path):
    """data.batch_size=320 is a number (it was the string '320' and refused), and the other
    decoder scores the run the same (the decoders agree to a grey level)."""
    trained_top1 = json.loads((trained / "results.json").read_text())["metrics"]["test/acc_top1"]
    for args in (["data.batch_size=320", "data.decoder=pil"], ["model.eval_resize=40"]):
        cwd = tmp_path / args[0]
        cwd.mkdir()
        proc = run_train([f"run={trained}", *args], ENV, cwd=cwd, script="eval.py")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (folder,) = (cwd / "outputs" / "eval").iterdir()
        result = json.loads((folder / "eval.json").read_text())
        assert result["images"] == 40
        if "data.decoder=pil" in args:
            assert result["acc_top1"] == trained_top1


def test_another_model_or_data_beside_run_is_refused_not_ignored(trained, tmp_path):
    """``eval.py run=<a resnet18 run> model=vgg11`` scored the resnet18 without a word (the
    run's sections replaced the group choice); and the refused command's folder now says why
    it holds nothing (its eval.log was empty)."""
    from cnnzoo.tasks.restore import refuse_another_group

    proc = run_train([f"run={trained}", "model=vgg11"], ENV, cwd=tmp_path, script="eval.py")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"model=vgg11: run={trained} trained with model=resnet18" in proc.stderr
    (folder,) = (tmp_path / "outputs" / "eval").iterdir()
    assert "model=vgg11: run=" in (folder / "eval.log").read_text()
    refuse_another_group(trained, "model", "resnet18")  # the run's own option: nothing to say
    with pytest.raises(ConfigError, match="data=imagenet: .* trained with data=sample"):
        refuse_another_group(trained, "data", "imagenet")


def test_views_are_averaged_as_softmax_probabilities():
    class Fixed(torch.nn.Module):  # logits of two images x two views, in (N * V) order
        def forward(self, images):
            l3 = torch.log(torch.tensor(3.0))
            return torch.tensor([[0.0, l3], [l3, 0.0], [0.0, 0.0], [0.0, l3]])

    views = torch.zeros(2, 2, 3, 4, 4)
    probs = predict_probabilities(Fixed(), views)
    # image 0: softmax (1/4, 3/4) and (3/4, 1/4) -> (1/2, 1/2); image 1: (1/2, 1/2), (1/4, 3/4)
    torch.testing.assert_close(probs, torch.tensor([[0.5, 0.5], [0.375, 0.625]]))


def test_ten_crop_and_flip_views():
    pixels = torch.arange(16, dtype=torch.uint8).view(4, 4) * 16  # value = position
    image = Image.fromarray(pixels.numpy()).convert("RGB")
    ten = MultiCrop(2, "ten")(image)[:, 0]  # one channel, normalised
    assert ten.shape == (10, 2, 2)
    corners = [pixels[:2, :2], pixels[:2, 2:], pixels[2:, :2], pixels[2:, 2:], pixels[1:3, 1:3]]
    order = [v.flatten().argsort() for v in ten[:5]]
    for view, corner, o in zip(ten[:5], corners, order, strict=True):
        assert torch.equal(view.flatten().argsort(), corner.flatten().argsort())
        assert torch.equal(o, corner.flatten().argsort())
    # the four corners and the centre, each as the view whose pixel values it holds
    means = ten[:5].mean(dim=(1, 2))
    assert torch.equal(means.argsort(), torch.tensor([0, 1, 4, 2, 3]))
    # then the same five crops of the mirrored image: each patch's reflection
    for plain, mirrored in zip(ten[[1, 0, 3, 2, 4]], ten[5:], strict=True):
        assert torch.equal(mirrored, plain.flip(-1))
    flip = MultiCrop(2, "flip")(image)
    assert flip.shape == (2, 3, 2, 2) and torch.equal(flip[1], flip[0].flip(-1))
    assert torch.equal(flip[0, 0], ten[4])


@pytest.mark.slow
def test_ten_crop_eval_scores_every_image_once(trained, tmp_path):
    cfg = compose_train([f"run={trained}", "eval.crop=ten"], out=tmp_path, config="eval")
    result = run_eval(cfg)
    assert result["images"] == 40 and result["views"] == 10
    assert 0.0 <= result["acc_top1"] <= result["acc_top5"] <= 1.0
    assert json.loads((tmp_path / "eval.json").read_text())["crop"] == "ten"


@pytest.mark.slow
def test_predict_on_a_folder_with_an_image_and_a_text_file(trained, tmp_path, cache_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    val = next(cache_dir.glob("sample_*")) / "val" / "n01440764"
    shutil.copy(next(val.iterdir()), folder / "fish.jpg")
    (folder / "notes.txt").write_text("a:x:b [i]c not an image\n")  # no emoji, no markup:
    proc = run_train(
        [f"run={trained}", f"images=[{folder}]"], ENV, cwd=tmp_path, script="predict.py"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if "fish.jpg" in line]
    answers = line.split(": ", 1)[1].split(" | ")
    assert len(answers) == 5
    probs = [float(a.rsplit(" ", 1)[1]) for a in answers]
    assert probs == sorted(probs, reverse=True)
    assert "notes.txt: skipped, not a readable image" in proc.stderr
    assert "it begins b'a:x:b [i]c" in proc.stderr  # (rich printed "a❌b")
    assert not (tmp_path / "outputs").exists()  # predict writes nothing

    proc = run_train(
        [f"run={trained}", f"images=[{folder / 'fish.jpg'}]", "predict.format=json"],
        ENV,
        cwd=tmp_path,
        script="predict.py",
    )
    (prediction,) = json.loads(proc.stdout[proc.stdout.index("[") :])
    assert len(prediction["top"]) == 5
    assert sum(t["probability"] for t in prediction["top"]) <= 1.0001


@pytest.mark.slow
def test_predict_names_a_missing_image_path(trained, tmp_path):
    for given in ("images=[no/such/cat.jpg]", "images=no/such/cat.jpg"):  # a list, or one path
        cfg = compose_train([f"run={trained}", given], config="predict")
        with pytest.raises(UserError, match="images: no/such/cat.jpg does not exist"):
            run_predict(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("predict.format=csv", "predict.format='csv': choose text or json"),
        ("predict.topk=0", "predict.topk=0: give the number of classes shown, 1 or more"),
        ("predict.topk=-1", "predict.topk=-1: give the number of classes shown"),
    ],
)
def test_predict_options_are_checked_before_any_image(override, message, monkeypatch):
    import cnnzoo.tasks.predict as predict

    monkeypatch.setattr(predict, "run_config", lambda cfg: pytest.fail("read the run first"))
    cfg = compose_train(["run=somewhere", "images=[cat.jpg]", override], config="predict")
    with pytest.raises(UserError, match=message):
        run_predict(cfg)


def test_one_image_given_without_brackets_is_one_path(tmp_path):
    """images=cat.jpg is one path (it was read letter by letter: "/" searched the whole disk)."""
    from cnnzoo.tasks.predict import image_files

    cat = tmp_path / "cat.jpg"
    cat.write_bytes(b"not looked at here")
    assert image_files(str(cat)) == image_files([str(cat)]) == [cat]
    with pytest.raises(UserError, match=r"images=\[\]: no image files given"):
        image_files([])
    url = "https://example.com/cat.jpg"
    with pytest.raises(UserError, match=f"images: {url} is a web address.*curl -LO '{url}'"):
        image_files([url])  # (it said "does not exist")


def test_a_pattern_the_shell_left_alone_gives_the_files_it_matches(tmp_path):
    """``'images=photos/*.jpg'`` (quoted, so the shell does not expand it) was "does not exist"."""
    from cnnzoo.tasks.predict import image_files

    for name in ("a/1.jpg", "a/2.png", "b/c/3.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"not looked at here")
    assert image_files(f"{tmp_path}/a/*.jpg") == [tmp_path / "a/1.jpg"]
    assert image_files([f"{tmp_path}/**/*.jpg"]) == [tmp_path / "a/1.jpg", tmp_path / "b/c/3.jpg"]
    assert image_files([f"{tmp_path}/?"]) == image_files([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(UserError, match=r"images: .*/\*\.gif matches no file or folder"):
        image_files([f"{tmp_path}/*.gif"])


@pytest.mark.slow
def test_exported_state_dict_gives_identical_logits_in_torchvision(trained, tmp_path):
    out = tmp_path / "resnet18.pth"
    assert export_main([f"run={trained}", f"out={out}"]) == out
    net = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict(torch.load(out, weights_only=True))
    cfg = compose_train([f"run={trained}"], out=tmp_path, config="eval")
    from cnnzoo.tasks.restore import run_config

    module, _ = load_module(run_config(cfg))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(images), module(images))
    with pytest.raises(SystemExit):  # an existing file is kept
        export_main([f"run={trained}", f"out={out}"])


@pytest.mark.slow
def test_an_export_that_fails_leaves_no_half_file(trained, tmp_path, monkeypatch):
    """A full disk, an interrupted export: the half-written file stayed under the name (and the
    next export refused to replace it); with overwrite=true the good one was lost."""
    out = tmp_path / "resnet18.pth"
    good = export_main([f"run={trained}", f"out={out}"]).read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_main([f"run={trained}", f"out={tmp_path / 'other.pth'}"])
    with pytest.raises(OSError, match="No space left"):
        export_main([f"run={trained}", f"out={out}", "overwrite=true"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet18.pth"]
    assert out.read_bytes() == good


@pytest.mark.slow
def test_torchscript_export_runs_without_cnnzoo(trained, tmp_path):
    out = tmp_path / "net.pt"
    export_main([f"run={trained}", "format=torchscript", f"out={out}"])
    scripted = torch.jit.load(out)
    assert scripted(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.slow
def test_eval_of_torchvision_format_weights(trained, tmp_path, cache_dir):
    weights = tmp_path / "resnet18-tiny.pth"
    export_main([f"run={trained}", f"out={weights}"])
    data = [
        o
        for o in tiny_overrides(cache_dir, tmp_path)
        if o.startswith(("data.", "model.", "paths."))
    ]
    proc = run_train(
        [*data, "model=resnet18", f"model.weights={weights}"], ENV, cwd=tmp_path, script="eval.py"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (tmp_path / "outputs" / "eval").iterdir()
    result = json.loads((folder / "eval.json").read_text())
    assert result["images"] == 40 and result["weights"] == str(weights)
    assert (
        result["acc_top1"]
        == json.loads((trained / "results.json").read_text())["metrics"]["test/acc_top1"]
    )


@pytest.mark.slow
def test_bad_checkpoints_are_named(trained, tmp_path):
    empty = tmp_path / "run-without-checkpoint"
    shutil.copytree(trained / ".hydra", empty / ".hydra")
    with pytest.raises(UserError, match="no checkpoint at .* holds none: a run that stopped"):
        run_eval(compose_train([f"run={empty}"], out=tmp_path, config="eval"))
    with pytest.raises(UserError, match=r"ckpt=middle: .* holds best.ckpt, last.ckpt\)"):
        run_eval(compose_train([f"run={trained}", "ckpt=middle"], out=tmp_path, config="eval"))
    proc = run_train(
        [f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", "model=alexnet"],
        ENV,
        cwd=tmp_path,
        script="eval.py",
    )
    assert proc.returncode == 1
    assert "arch 'resnet18'" in proc.stderr and "'alexnet'" in proc.stderr
    assert "Traceback" not in proc.stderr
    results = trained / "results.json"
    with pytest.raises(UserError, match=f"the checkpoint {results} is not a PyTorch checkpoint"):
        run_eval(compose_train([f"ckpt_path={results}"], out=tmp_path, config="eval"))
    with pytest.raises(UserError, match="holds no EMA weights"):
        run_eval(compose_train([f"run={trained}", "eval.ema=true"], out=tmp_path, config="eval"))
    with pytest.raises(UserError, match="no trained weights named, so resnet18 would have random"):
        run_eval(compose_train(["model=resnet18"], out=tmp_path / "forgot-run", config="eval"))
    assert not (tmp_path / "forgot-run" / "eval.json").exists()


SCHEDULERS = ("cosine", "step", "multistep", "plateau", "exponential", "none")
DATA = ("imagenet", "imagenet_shards", "sample_shards", "synthetic", "cifar10")


@pytest.mark.parametrize(
    "groups",
    [*[[f"scheduler={s}"] for s in SCHEDULERS], *[[f"data={d}"] for d in DATA],
     ["data=imagefolder", "data.root=/photos", "data.num_classes=5"],
     ["scheduler=cosine", "scheduler.warmup_epochs=2", "data.loader=dali"]],
)  # fmt: skip
def test_any_runs_config_resolves_in_eval_predict_and_export(tmp_path, groups):
    """eval, predict and export take the run's sections; what those interpolate from outside
    them (the cosine schedule's trainer.max_epochs) comes along (it failed with
    InterpolationKeyError in export)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from cnnzoo.build import build_module
    from cnnzoo.tasks.restore import run_config

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_train(["model=resnet18", *groups]), run / ".hydra" / "config.yaml")
    as_export = OmegaConf.create({"run": str(run), "ckpt": "best", "seed": 0, "paths": {}})
    as_eval = compose_train([f"run={run}"], config="eval")
    for cfg in (run_config(as_export), run_config(as_eval)):
        for section in ("model", "optim", "scheduler"):
            OmegaConf.to_container(cfg[section], resolve=True)
        build_module(cfg)
    datamodule = instantiate(run_config(as_eval).data)
    assert getattr(datamodule, "loader", "workers") == "workers"  # eval reads with workers
    if "data=cifar10" in groups:  # (the model's sizes and stem follow the data's `input`)
        model = run_config(as_eval).model
        assert (model.input_size, model.eval_resize, model.small_input) == (32, 32, True)


def test_a_runs_relative_data_root_is_found_from_any_folder(tmp_path, monkeypatch):
    """data.root=photos at training; eval/predict/visualize/export or resume= run from another
    folder: "data folder photos does not exist" before; now the folder the run began in."""
    from omegaconf import OmegaConf

    from cnnzoo.tasks.launch import resume_args
    from cnnzoo.tasks.restore import run_config

    run, trained_in, elsewhere = tmp_path / "run", tmp_path / "project", tmp_path / "elsewhere"
    (run / ".hydra").mkdir(parents=True)
    (trained_in / "photos").mkdir(parents=True)
    elsewhere.mkdir()
    groups = ["data=imagefolder", "data.root=photos", "data.num_classes=2"]
    OmegaConf.save(compose_train(["model=resnet18", *groups]), run / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"cwd": str(trained_in)}}}, run / ".hydra" / "hydra.yaml")
    monkeypatch.chdir(elsewhere)
    cfg = run_config(compose_train([f"run={run}"], config="eval"))
    assert cfg.data.root == str(trained_in / "photos")
    (run / ".hydra" / "overrides.yaml").write_text("- data.root=photos\n")  # and resume=
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert f"data.root={trained_in / 'photos'}" in resume_args(run, [])
    assert "data.root=mine" in resume_args(run, ["data.root=mine"])  # given now: that one
    (trained_in / "photos").rmdir()  # not there either: as given, for the error to name it
    assert run_config(compose_train([f"run={run}"], config="eval")).data.root == "photos"
    assert "data.root=photos" in resume_args(run, [])


def v01_config(run_config_file: Path) -> None:
    """Rewrite a run's saved config as cnnzoo 0.1 wrote it: flat model and optim configs (the
    builder's and the optimiser's arguments beside the run's keys), no module section."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_config_file)
    model = OmegaConf.to_container(cfg.model, resolve=False)
    net, optim = model.pop("net"), OmegaConf.to_container(cfg.optim, resolve=False)
    model.pop("freeze")
    optimizer = optim.pop("optimizer")
    optim.pop("head_lr_mult")
    cfg.model = {"_target_": net["_target_"], **model}
    cfg.optim = {"_target_": optimizer["_target_"], "_partial_": True, **optim}
    del cfg["module"]
    OmegaConf.save(cfg, run_config_file)


def test_a_run_of_cnnzoo_0_1_still_evaluates_predicts_and_exports(trained, tmp_path):
    """A run folder whose config was written before the build door (flat model/optim, no
    module) is upgraded as it is read: the same scores, the same exported weights."""
    old = tmp_path / "old-run"
    shutil.copytree(trained, old)
    v01_config(old / ".hydra" / "config.yaml")
    assert "net:" not in (old / ".hydra" / "config.yaml").read_text()
    scores = [
        run_eval(compose_train([f"run={run}"], out=tmp_path / run.name, config="eval"))
        for run in (trained, old)
    ]
    assert scores[0]["acc_top1"] == scores[1]["acc_top1"] and scores[1]["images"] == 40
    exported = [
        export_main([f"run={run}", f"out={tmp_path / run.name}.pth"]) for run in (trained, old)
    ]
    first, second = (torch.load(p, weights_only=True) for p in exported)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    Image.new("RGB", (40, 50), (200, 30, 30)).save(tmp_path / "red.png")
    predicted = run_predict(compose_train([f"run={old}", f"images=[{tmp_path / 'red.png'}]"],
                                          config="predict"))  # fmt: skip
    assert predicted and len(predicted[0]["top"]) == 5


def test_a_synthetic_run_has_nothing_to_score_or_name(tmp_path, offline_env, cache_dir):
    """A data=synthetic run (noise, for measuring speed): eval, predict and the image views
    refuse it with one line; its filters can still be drawn."""
    from omegaconf import OmegaConf

    from cnnzoo.errors import ConfigError
    from cnnzoo.tasks.train import train
    from cnnzoo.tasks.visualize import run_visualize

    run = tmp_path / "synthetic"
    cfg = compose_train(["data=synthetic", "trainer=cpu", "model.input_size=32",
                         "data.batch_size=4", "data.steps_per_epoch=2", "data.val_steps=1",
                         "trainer.max_epochs=1", "logger=none", "callbacks.progress_bar=null",
                         "callbacks.prediction_grid=null"], out=run)  # fmt: skip
    train(cfg)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    image = next(next(cache_dir.glob("sample_*")).glob("val/*/*"))
    for config, extra in (("eval", []), ("predict", [f"images=[{image}]"]),
                          ("visualize", ["what=gradcam", f"images=[{image}]"])):  # fmt: skip
        task = {"eval": run_eval, "predict": run_predict, "visualize": run_visualize}[config]
        with pytest.raises(ConfigError, match="trained on SyntheticDataModule .* no images"):
            task(compose_train([f"run={run}", *extra], out=tmp_path / config, config=config))
    visualize = compose_train([f"run={run}", "what=filters"], config="visualize")
    assert run_visualize(visualize) == [run / "visualize" / "filters.png"]


@pytest.mark.slow
def test_predict_ranks_the_true_class_and_totals_the_top_k_error(trained, tmp_path, cache_dir):
    """Images in class folders (val/<wnid>/) or with label=: where the true class ranks, its
    probability and the top-1/top-5 error of each image, and the totals, which over the whole
    val split are eval.py's top-1 and top-5 error."""
    val = next(cache_dir.glob("sample_*")) / "val"
    predictions = run_predict(
        compose_train([f"run={trained}", f"images=[{val}]"], config="predict")
    )
    assert len(predictions) == 40 and all("true" in p for p in predictions)
    for p in predictions:
        true = p["true"]
        assert true["top1_error"] == (p["top"][0]["class"] != true["class"])
        assert true["top5_error"] == (true["class"] not in [t["class"] for t in p["top"]])
        assert (true["rank"] == 1) == (not true["top1_error"])
    scored = run_eval(compose_train([f"run={trained}", "eval.split=val"], out=tmp_path,
                                    config="eval"))  # fmt: skip
    top1 = sum(p["true"]["top1_error"] for p in predictions) / 40
    top5 = sum(p["true"]["top5_error"] for p in predictions) / 40
    assert top1 == pytest.approx(scored["err_top1"]) and top5 == pytest.approx(scored["err_top5"])

    image = next((val / "n01440764").iterdir())
    copy = tmp_path / "unsorted" / "x.jpg"
    copy.parent.mkdir()
    shutil.copy(image, copy)
    (alone,) = run_predict(compose_train([f"run={trained}", f"images=[{copy}]"], config="predict"))
    assert "true" not in alone  # (a folder that names no class: nothing known)
    (told,) = run_predict(compose_train([f"run={trained}", f"images=[{copy}]", "label=n01440764"],
                                        config="predict"))  # fmt: skip
    assert told["true"]["class"] == 0
    with pytest.raises(ConfigError, match="label=cat: not a class of this run"):
        run_predict(compose_train([f"run={trained}", f"images=[{copy}]", "label=cat"],
                                  config="predict"))  # fmt: skip
