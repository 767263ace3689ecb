"""visualize.py: the first layer's filters and the val confusion matrix of a run, as files in
its visualize/ folder, never over an earlier one; bad requests are one clear error."""

import json

import pytest
import torch
from helpers import compose_train, tiny_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnzoo.errors import ConfigError
from cnnzoo.models import create_model
from cnnzoo.tasks.train import train
from cnnzoo.tasks.visualize import filter_grid, most_confused_classes, run_visualize

pytestmark = pytest.mark.xdist_group("visualize")  # its module fixtures are made once


@pytest.fixture(scope="module")
def run(cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    cfg = compose_train([*tiny_overrides(cache_dir, folder), "logger=none"], out=folder)
    train(cfg)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # what train.py's Hydra keeps
    return folder


def visualize(run, *overrides: str) -> list:
    return run_visualize(compose_train([f"run={run}", *overrides], config="visualize"))


@pytest.mark.parametrize(("arch", "count", "size"), [("alexnet", 64, 11), ("resnet18", 64, 7)])
def test_filter_grid_holds_every_kernel_scaled_to_its_range(arch, count, size):
    conv = create_model(arch, num_classes=10).features[0] if arch == "alexnet" else None
    weight = conv.weight if conv is not None else create_model(arch, num_classes=10).conv1.weight
    assert weight.shape == (count, 3, size, size)
    grid = filter_grid(weight)
    side = 8 * (size + 1) + 1  # 8 x 8 kernels, one pixel apart
    assert grid.shape == (3, side, side)
    assert grid.min() == 0.0 and grid.max() == 1.0
    first = grid[:, 1 : 1 + size, 1 : 1 + size]  # the first kernel, min..max -> 0..1
    assert first.min() == 0.0 and first.max() == 1.0


def test_filters_are_drawn_into_the_run_never_over_an_earlier_picture(run):
    first, = visualize(run)  # fmt: skip
    second, = visualize(run)  # fmt: skip
    assert (first.name, second.name) == ("filters.png", "filters-2.png")
    assert first.parent == run / "visualize" and first.stat().st_size > 10_000


def test_confusion_counts_every_val_image_and_ranks_classes(run, tmp_path):
    matrix, bars = visualize(run, "what=confusion")
    assert (matrix.name, bars.name) == ("confusion.png", "per_class_top1.png")
    assert matrix.stat().st_size > 10_000 and bars.stat().st_size > 10_000
    from cnnzoo.tasks.evaluate import run_eval
    from cnnzoo.tasks.restore import load_module, run_config
    from cnnzoo.tasks.visualize import confusion_matrix

    cfg = run_config(compose_train([f"run={run}"], config="visualize"))
    confusion, names = confusion_matrix(load_module(cfg)[0], instantiate(cfg.data))
    assert int(confusion.sum()) == 40 and len(names) == 10  # the tiny set's val split
    scored = run_eval(compose_train([f"run={run}", "eval.split=val"], out=tmp_path, config="eval"))
    assert int(confusion.diagonal().sum()) / 40 == pytest.approx(scored["acc_top1"])  # alike
    # and as Lightning's test loop scored the best checkpoint on the same 40 images (the test
    # split is the official val here), a path that shares no scoring code with evaluate():
    tested = json.loads((run / "results.json").read_text())["metrics"]["test/acc_top1"]
    assert int(confusion.diagonal().sum()) / 40 == pytest.approx(tested)
    confusion = torch.zeros(5, 5, dtype=torch.long)
    confusion[1, 3], confusion[4, 1], confusion[2, 2] = 7, 2, 50
    assert most_confused_classes(confusion, 3).tolist() == [1, 3, 4]


def test_bad_requests_are_named(run, tmp_path):
    with pytest.raises(ConfigError, match="what='gradcams': choose one of"):
        visualize(run, "what=gradcams")
    with pytest.raises(ConfigError, match="give the run to look at"):
        run_visualize(compose_train([], config="visualize"))
    empty = tmp_path / "empty"
    (empty / ".hydra").mkdir(parents=True)
    (empty / ".hydra" / "config.yaml").write_text((run / ".hydra" / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="no checkpoint at"):
        visualize(empty)


def test_a_training_image_is_its_own_nearest_neighbour_and_the_index_is_cached(run, cache_dir):
    train = sorted((next(cache_dir.glob("sample_*")) / "train").rglob("*.JPEG"))
    query = [str(train[0]), str(train[37])]
    (picture,) = visualize(run, "what=neighbours", f"images=[{query[0]},{query[1]}]",
                           "visualize.k=3")  # fmt: skip
    assert picture.name == "neighbours.png" and picture.stat().st_size > 10_000
    (cache,) = (run / "visualize").glob(".neighbours-best-*.pt")
    saved = torch.load(cache, weights_only=True)
    assert len(saved["paths"]) == len(train) == saved["features"].shape[0]
    from cnnzoo.tasks.visualize import nearest

    features = saved["features"].float() * saved["scale"]
    assert torch.isfinite(features).all()
    rows = [saved["paths"].index(q) for q in query]
    assert [hits[0] for hits in nearest(features[rows], features, 3).tolist()] == rows
    stamp = cache.stat().st_mtime_ns
    visualize(run, "what=neighbours", f"images=[{query[0]}]")  # a second query: the cache
    assert cache.stat().st_mtime_ns == stamp
    cache.write_bytes(cache.read_bytes()[:1000])  # damaged (a full disk): made again, no crash
    visualize(run, "what=neighbours", f"images=[{query[0]}]")
    assert torch.load(cache, weights_only=True)["paths"] == saved["paths"]
    assert not list((run / "visualize").glob("*.partial"))


def test_gradcam_is_largest_where_the_object_is():
    """A network that scores class 0 by the brightness its conv layer sees: Grad-CAM of class
    0 peaks on the bright square, wherever it is put."""
    from torch import nn

    from cnnzoo.tasks.gradcam import gradcam_maps

    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 1 / 27)
    head = nn.Linear(4, 2, bias=False)
    head.weight.data = torch.tensor([[1.0] * 4, [-1.0] * 4])
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    images = torch.zeros(2, 3, 32, 32)
    images[0, :, 4:12, 20:28] = 1.0  # top right
    images[1, :, 22:30, 2:10] = 1.0  # bottom left
    maps = gradcam_maps(net, images, net[1], [0, 0])
    assert maps.shape == (2, 32, 32) and maps.max() <= 1.0
    for heat, (rows, cols) in zip(maps, [(slice(4, 12), slice(20, 28)),
                                         (slice(22, 30), slice(2, 10))], strict=True):  # fmt: skip
        peak = divmod(int(heat.argmax()), 32)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop
        assert heat[rows, cols].mean() > 5 * heat.mean() / 2


def test_every_architecture_has_a_gradcam_layer():
    from cnnzoo.models import list_models
    from cnnzoo.tasks.gradcam import target_layer

    with torch.device("meta"):
        for arch in list_models():
            layer = target_layer(create_model(arch, num_classes=10), arch)
            assert not isinstance(layer, torch.nn.Sequential), arch


def test_gradcam_of_a_run_and_its_bad_requests(run, cache_dir, tmp_path):
    image = sorted((next(cache_dir.glob("sample_*")) / "val").rglob("*.JPEG"))[0]
    text = tmp_path / "notes.JPEG"
    text.write_text("not an image")
    (picture,) = visualize(run, "what=gradcam", f"images=[{image},{text}]")
    assert picture.name == "gradcam.png" and picture.stat().st_size > 10_000
    with pytest.raises(ConfigError, match="visualize.layer='layer9': resnet18 has no such"):
        visualize(run, "what=gradcam", f"images=[{image}]", "visualize.layer=layer9")
    with pytest.raises(ConfigError, match="none is a readable image"):
        visualize(run, "what=gradcam", f"images=[{text}]")


def test_many_images_are_drawn_a_page_at_a_time(run, cache_dir):
    """A folder of photos: 16 Grad-CAMs and 8 neighbour rows per picture (300 query images in
    one figure took matplotlib over 6 minutes and wrote nothing)."""
    from PIL import Image

    val = sorted((next(cache_dir.glob("sample_*")) / "val").rglob("*.JPEG"))
    assert len(val) >= 17
    folder = run / "many"  # 17 images: one more than a page
    folder.mkdir()
    for path in val[:17]:
        (folder / path.name).write_bytes(path.read_bytes())
    before = set((run / "visualize").iterdir())  # (other tests draw into the same run)
    first, second = visualize(run, "what=gradcam", f"images=[{folder}]")
    assert first.name.startswith("gradcam") and second.name.startswith("gradcam")
    assert Image.open(first).size[1] > Image.open(second).size[1]  # 4 rows, then 1
    pictures = visualize(run, "what=neighbours", f"images=[{folder}]", "visualize.k=1")
    assert len(pictures) == 3 and all(p.name.startswith("neighbours") for p in pictures)
    assert not before & {first, second, *pictures}  # new pictures, none drawn over


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("visualize.k=0", "visualize.k=0: give 1 to 20"),
        ("visualize.k=5000", "visualize.k=5000: give 1 to 20"),  # (minutes, then nothing)
        ("visualize.confusion_classes=-3", "visualize.confusion_classes=-3: give 2 or more"),
    ],
)
def test_counts_out_of_range_are_refused_first(run, override, message):
    with pytest.raises(ConfigError, match=message):
        visualize(run, "what=neighbours", override)


def test_the_pictures_go_to_the_runs_own_wandb_run(cache_dir, tmp_path, offline_env):
    folder = tmp_path / "run"
    cfg = compose_train([*tiny_overrides(cache_dir, folder), "logger=wandb"], out=folder)
    train(cfg)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    (first,) = (folder / "wandb").glob("offline-run-*")
    visualize(folder)
    chunks = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(chunks) == 2  # the training run's, then the pictures', under the same id
    run_id = lambda chunk: chunk.name.split("-")[3]  # noqa: E731  offline-run-<time>-<id>[-n]
    assert {run_id(c) for c in chunks} == {run_id(first)}  # (-n: a chunk made in the same second)
    assert list(chunks[1].glob("files/media/images/visualize/filters_*.png"))


@pytest.mark.parametrize(
    ("arch", "size", "layer"),
    [("resnet18", 32, "layer2"), ("resnet18", 48, "layer3"), ("resnet18", 224, "layer4.1"),
     ("vgg11", 224, "features.20"), ("inception_v3", 75, "Mixed_6e")],
)  # fmt: skip
def test_gradcam_reads_the_deepest_block_whose_map_is_not_a_flat_tint(arch, size, layer):
    """ResNet-18's layer4 is 1x1 at 32 px (2x2 at 48): every tile was one uniform tint."""
    from cnnzoo.tasks.gradcam import gradcam_layer

    net = create_model(arch, num_classes=10)
    name, module = gradcam_layer(net, arch, None, size)
    assert name == layer and module is net.get_submodule(layer)
    if arch == "resnet18":  # (a layer given is the layer read)
        assert gradcam_layer(net, arch, "layer1", size)[0] == "layer1"


def test_pictures_name_their_layer_and_classes(run, cache_dir, monkeypatch):
    """Grad-CAM's title names the layer it read; neighbours are labelled with class names
    (tench), not wnids (n01440764)."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    said = []
    monkeypatch.setattr(Axes, "set_title", lambda self, text, **kw: said.append(text))
    monkeypatch.setattr(Figure, "suptitle", lambda self, text, **kw: said.append(text))
    image = sorted((next(cache_dir.glob("sample_*")) / "train").rglob("*.JPEG"))[0]
    visualize(run, "what=gradcam", f"images=[{image}]")
    assert "resnet18: Grad-CAM at layer2" in said  # (the run is at 32 px)
    said.clear()
    visualize(run, "what=neighbours", f"images=[{image}]", "visualize.k=2")
    assert said[1] == "tench" and not any(text.startswith("n0") for text in said[1:])
