"""The ImageFolder DataModule: clear errors for bad trees, global batch semantics."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from helpers import place, tiny_datamodule

from cnnzoo.data import ImageFolderDataModule
from cnnzoo.data.options import DataOptions, LoadingOptions, RecipeOptions, TreeOptions
from cnnzoo.data.pipelines import Placement
from cnnzoo.data.tree import ImageTree
from cnnzoo.errors import ConfigError, DataError


def module(root, **kwargs) -> ImageFolderDataModule:
    return tiny_datamodule(root, **kwargs)


def test_missing_root_names_path_layout_and_setting(tmp_path):
    missing = tmp_path / "no-such-imagenet"
    with pytest.raises(DataError) as e:
        module(str(missing), wnids="imagenet").setup()
    message = str(e.value)
    assert str(missing) in message and "does not exist" in message
    assert "ROOT/train/<wnid>/*.JPEG" in message
    assert "data.root" in message and "IMAGENET_ROOT" in message


def test_no_root_given(tmp_path):
    with pytest.raises(DataError, match="no data folder given.*IMAGENET_ROOT"):
        module(None).setup()


def test_empty_root_says_what_was_found(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match=r"has no train or val folder \(found: stuff\)"):
        module(str(tmp_path)).setup()


@pytest.mark.parametrize("split", [False, True])
def test_class_folders_without_a_val_split_say_how_to_split(cache_dir, tmp_path, split):
    """The usual folder of one's own photos: ROOT/<class>/*.jpg, or ROOT/train/ alone."""
    sample = next(cache_dir.glob("sample_*"))
    root = tmp_path / "photos"
    shutil.copytree(sample / "train", root / "train" if split else root)
    with pytest.raises(DataError) as e:
        tiny_datamodule(root, wnids=None, root_setting="data.root").setup()
    message = str(e.value)
    assert "Expected ROOT/train/<class>/* and ROOT/val/<class>/*" in message
    held_out = f"some images of each class (one in five, say) in{'' if split else 'to'} {root}/val"
    assert held_out in message
    assert ("move the class folders into" in message) is not split
    assert "prepare_imagenet" not in message  # (ImageNet's archives: data=imagenet only)


def test_an_archive_given_as_the_root_is_named_a_file(tmp_path):
    archive = tmp_path / "ILSVRC2012_img_train.tar"
    archive.write_bytes(b"")
    with pytest.raises(DataError, match=f"data folder {archive} is a file, not a folder.*prepare"):
        module(str(archive), wnids="imagenet").setup()


def test_a_split_given_as_the_root_points_to_the_folder_above(tmp_path):
    """data.root=photos/train (a common slip): the fix names photos; a 1000-class folder is
    not listed whole."""
    for split in ("train", "val"):
        for c in range(6):
            (tmp_path / split / f"class{c}").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        module(str(tmp_path / "train")).setup()
    assert "(found: class0, class1, class2, class3, ... (6 in all))" in str(e.value)
    assert f"It is a split of {tmp_path}: set data.root={tmp_path}." in str(e.value)


def test_empty_split_and_wrong_class_count(cache_dir, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="train.*Expected ROOT/train"):
        module(str(tmp_path)).setup()
    sample = next(cache_dir.glob("sample_*"))
    with pytest.raises(DataError, match="has 10 class folders but data.num_classes=1000"):
        module(str(sample), num_classes=1000).setup()


def test_eval_resize_below_crop_is_a_config_error():
    with pytest.raises(ConfigError, match="eval_resize=30 is smaller than data.image_size=32"):
        module("x", eval_resize=30)


def test_global_batch_is_split_over_the_world(cache_dir):
    dm = module(str(next(cache_dir.glob("sample_*"))), batch_size=12)
    dm.setup()
    place(dm, world_size=3)
    assert dm.train_dataloader().batch_size == 4
    place(dm, world_size=3, accumulate=2)
    assert dm.train_dataloader().batch_size == 2  # 3 processes x 2 passes x 2 = 12 per step
    place(dm, world_size=5)
    with pytest.raises(ConfigError, match="batch_size=12 is the global batch .* world size 5"):
        dm.train_dataloader()


def test_device_defaults_follow_the_trainer_attached_later(cache_dir):
    """The train task checks the data (setup) before the trainer exists; the loaders are built
    once it is attached, and follow its device: uint8 batches for a CUDA trainer (normalised
    there), floats for a CPU one; num_workers=auto shares the node's CPUs among its devices."""
    import os

    from cnnzoo.data.batching import auto_workers

    dm = module(str(next(cache_dir.glob("sample_*"))), num_workers="auto")
    dm.setup("fit")  # no trainer yet
    place(dm, device="cuda", devices=2)
    loader = dm.train_dataloader()
    assert loader.num_workers == auto_workers(len(os.sched_getaffinity(0)), 2)
    dm.loading = dataclasses.replace(dm.loading, num_workers=0)  # (the batch, in this process)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8
    assert next(iter(dm.val_dataloader()))[0].dtype == torch.uint8
    place(dm, device="cpu")
    assert next(iter(dm.train_dataloader()))[0].dtype == torch.float32


def test_data_settings_are_sorted_into_typed_options_and_unknown_keys_named():
    options = DataOptions.parse(root="~/photos", batch_size=64, train_crop="vgg", decoder="pil")
    assert options.tree == TreeOptions(root=Path("~/photos").expanduser())
    assert options.recipe.train_crop == "vgg" and options.recipe.scale_jitter == (256, 512)
    assert options.loading == LoadingOptions(batch_size=64, decoder="pil")
    with pytest.raises(
        ConfigError,
        match=r"does not take data.batchsize, data.crop\. Drop them"
        r" with ~data.batchsize ~data.crop; it takes: auto_augment, batch_size",
    ):
        DataOptions.parse(batchsize=64, crop="vgg")  # fmt: skip


@pytest.mark.parametrize(
    ("group", "key", "value", "message"),
    [
        (LoadingOptions, "decoder", "opencv", "data.decoder='opencv': choose one of"),
        (LoadingOptions, "on_bad_file", "ignore", "data.on_bad_file='ignore': choose one of"),
        (LoadingOptions, "dali_device", "tpu", "data.dali_device='tpu': choose one of"),
        (LoadingOptions, "dali_hw_decoder_load", 1.5, "dali_hw_decoder_load=1.5: give a share"),
        (LoadingOptions, "num_workers", -1, "data.num_workers=-1: give a count >= 0 or auto"),
        (LoadingOptions, "batch_size", "32", "data.batch_size='32': give the global batch"),
        (RecipeOptions, "train_crop", "random", "data.train_crop='random': choose one of"),
        (RecipeOptions, "hflip", "maybe", "data.hflip='maybe': choose true or false"),
        (RecipeOptions, "train_crop_scale", [1.0, 0.5], "give a range of two numbers"),
        (TreeOptions, "val_from_train", 1.5, "data.val_from_train=1.5: give a whole number"),
        (TreeOptions, "wnids", "coco", "data.wnids='coco': choose one of"),
    ],
)
def test_each_data_setting_is_checked_where_its_option_is_made(group, key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        group(**{key: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):  # the same one check
        DataOptions.parse(**{key: value})


def test_the_tree_is_read_without_lightning(cache_dir):
    """Index, classes, held-out split and names: an ImageTree needs no trainer."""
    root = next(cache_dir.glob("sample_*"))
    tree = ImageTree(TreeOptions(root, num_classes=None, val_from_train=1, split_seed=3))
    splits = tree.splits()
    assert tree.num_classes() == 10 and splits.classes[0] == "n01440764"
    assert len(splits.val) == 10 and len(splits.train) + len(splits.val) == 80
    assert len(splits.test) == 40 and splits.test is not splits.val
    assert tree.names(splits.classes)[0] == "tench"
    assert ImageTree(TreeOptions(root, num_classes=10)).splits().val.folder == str(root / "val")


def test_a_placement_stands_for_the_trainer(cache_dir):
    """What loading reads of the trainer is one object: a placement alone builds rank 1's
    share of 2 at the per-device batch, with no trainer."""
    dm = module(str(next(cache_dir.glob("sample_*"))), batch_size=8)
    dm.setup("fit")
    dm.placement_override = Placement(rank=1, world_size=2, epoch=3)
    loader = dm.train_dataloader()
    assert loader.batch_size == 4 and loader.sampler.epoch == 3
    assert list(loader.sampler) == list(_shares(dm, 3)[1])


def _shares(dm, epoch):
    from cnnzoo.data.loading import SeededSampler

    size = len(dm.datasets["train"])
    samplers = [SeededSampler(size, shuffle=True, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return samplers


@pytest.mark.parametrize("loader", ["workers", "dali"])
def test_file_names_in_any_encoding_are_read_and_named(cache_dir, tmp_path, loader):
    """A name that is not UTF-8 (copied from an old Windows or Latin-1 disk) crashed the index;
    it is indexed, cached, read by either loader and, when the file is bad, listed by its name."""
    import os

    if loader == "dali":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from cnnzoo.data import SampleDataModule

    root = tmp_path / "tree é"
    shutil.copytree(next(cache_dir.glob("sample_*")), root)
    folder = sorted((root / "train").iterdir())[1]
    files = sorted(folder.iterdir())
    files[0].rename(folder / "çà 0.JPEG")
    os.rename(files[1], os.fsencode(folder) + b"/latin1 \xe9t\xe9.JPEG")  # (no UTF-8 name)
    bad = os.fsencode(folder) + b"/broken \xff.JPEG"
    os.rename(files[2], bad)
    Path(os.fsdecode(bad)).write_bytes(files[3].read_bytes()[:300])

    def run() -> tuple[int, list]:
        dm = SampleDataModule(str(root), num_classes=10, batch_size=8, num_workers=0,
                              image_size=32, eval_resize=36, loader=loader, on_bad_file="skip",
                              index_cache=str(tmp_path / "cache"), train_per_class=8,
                              val_per_class=2)  # fmt: skip
        dm.setup("fit")
        place(dm)
        return sum(len(labels) for _, labels in dm.train_dataloader()), dm.new_skipped("train")

    for _ in range(2):  # (built, then read back from the index cache)
        images, skipped = run()
        assert images == 79  # (the broken one listed by its name, its odd byte as \xff)
        assert [path for path, _ in skipped] == [str(folder / "broken \\xff.JPEG")]
