"""ImageNet as WebDataset shards: for file systems that cannot keep up with one open per image.

    python -m cnnzoo.data.shards --src /data/imagenet --dst /data/imagenet-shards
    python train.py data=imagenet_shards data.root=/data/imagenet-shards

A shared file system (NFS, Lustre, GPFS) serves a training job's 1.28M small JPEGs (110 kB
each) with one metadata lookup and one open per image; a few thousand images/s per node is
where that stops keeping up (README, "Data at scale"). Shards hold the same bytes in about a
thousand 100 MB tar files that each reader streams sequentially: one open per thousand images.

Format (WebDataset: any tar tool, ``webdataset``, timm and OpenCLIP read it):
``DST/train/train-000000.tar``, ..., ``DST/val/val-000000.tar``, ...; each sample is
``<key>.jpg`` (the original file's bytes, unchanged; ``.png`` etc. for other files),
``<key>.cls`` (the class index, in the tree's sorted order) and ``<key>.path`` (its path in the
tree); the key is the image's index in the split (ImageFolder order). Train images are shuffled
across the shards (``--seed``), val images stay in order. ``DST/cnnzoo-shards.json`` lists the
classes and each shard with its image count. It is written last: a folder without it is an
unfinished write, and running the same command again finishes it (finished shards are kept).

Reading (``ShardStream``): every DataLoader worker of every rank is one *reader* with its own
shards. Evaluation gives each val shard to exactly one reader, so every image is scored once
whatever the world size. Training shuffles the shard order every epoch (seed, epoch), reader
``j`` of ``R`` reads shards ``j, j + R, ...`` through a shuffle buffer and yields exactly its
share of the epoch's ``N // global_batch`` steps, so all ranks take the same number of steps
(the folder tree's count). That reads each image exactly once per epoch when every reader's
shards hold its share (the shard count divides by ``R`` and the steps by the workers);
otherwise a reader that runs short reads on into its first shard again and one with more
leaves its tail (at most a batch and a shard per reader), which the next epoch's shard order
deals out differently. The order and each image's augmentation follow from (seed, epoch,
rank, worker, image), and the loader saves how many batches it gave, so a resumed run
continues the epoch exactly (with the same number of ranks and workers; otherwise it warns and
the rest of the epoch is a fresh draw).
"""

from cnnzoo.data.shards.datamodule import SampleShardDataModule, ShardDataModule
from cnnzoo.data.shards.stream import (
    REMEDY,
    ShardFeed,
    ShardLoader,
    ShardPosition,
    ShardStream,
    image_of,
)
from cnnzoo.data.shards.write import META, load_meta, main, write_shards

__all__ = [
    "META",
    "REMEDY",
    "SampleShardDataModule",
    "ShardDataModule",
    "ShardFeed",
    "ShardLoader",
    "ShardPosition",
    "ShardStream",
    "image_of",
    "load_meta",
    "main",
    "write_shards",
]
