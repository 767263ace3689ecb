"""The ImageFolder DataModule: clear errors for bad trees, global batch semantics."""

from types import SimpleNamespace

import pytest
from conftest import tiny_datamodule

from cnnzoo.data import ImageFolderDataModule
from cnnzoo.errors import ConfigError, DataError


def module(root, **kwargs) -> ImageFolderDataModule:
    return tiny_datamodule(root, **kwargs)


def test_missing_root_names_path_layout_and_setting(tmp_path):
    missing = tmp_path / "no-such-imagenet"
    with pytest.raises(DataError) as e:
        module(str(missing)).setup()
    message = str(e.value)
    assert str(missing) in message and "does not exist" in message
    assert "ROOT/train/<wnid>/*.JPEG" in message
    assert "data.root" in message and "IMAGENET_ROOT" in message


def test_no_root_given(tmp_path):
    with pytest.raises(DataError, match="no data folder given.*IMAGENET_ROOT"):
        module(None).setup()


def test_empty_root_says_what_was_found(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match=r"has no train or val folder \(found: \['stuff'\]\)"):
        module(str(tmp_path)).setup()


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
    dm.trainer = SimpleNamespace(
        world_size=3, accumulate_grad_batches=1, global_rank=0, current_epoch=0
    )
    assert dm.train_dataloader().batch_size == 4
    dm.trainer = SimpleNamespace(
        world_size=3, accumulate_grad_batches=2, global_rank=0, current_epoch=0
    )
    assert dm.train_dataloader().batch_size == 2  # 3 processes x 2 passes x 2 = 12 per step
    dm.trainer = SimpleNamespace(
        world_size=5, accumulate_grad_batches=1, global_rank=0, current_epoch=0
    )
    with pytest.raises(ConfigError, match="batch_size=12 is the global batch .* world size 5"):
        dm.train_dataloader()
