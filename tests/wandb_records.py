"""A W&B offline run read back from its ``.wandb`` file, the record log that ``wandb sync``
uploads: wandb 0.31 has no Python reader of its own any more (its Go core reads it), so this
reads the format that core writes, a LevelDB-style log of wandb's own protobuf ``Record``s
(``wandb.proto.wandb_internal_pb2``): a 7-byte header (":W&B", magic, version), then 32 KiB
blocks of chunks, each with a CRC-32C, a length and a type (whole, first, middle, last)."""

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every ``Record`` in the file, in order."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    pos, parts = HEADER, b""
    while True:
        if BLOCK - pos % BLOCK < 7:  # (a block's tail too short for a chunk header: padding)
            pos += BLOCK - pos % BLOCK
        if pos + 7 > len(data):
            return
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:  # (zeros: the rest of a block)
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


@dataclass
class OfflineRun:
    """What an offline run holds: its run record, every history row, the summary as its last
    update left it, the config, the artifacts logged and the exit code."""

    run: object = None
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)
    exit_code: int | None = None


def read_run(folder: Path) -> OfflineRun:
    """The offline run in ``folder`` (a ``wandb/offline-run-*`` folder) from its ``.wandb``."""
    (log,) = Path(folder).glob("*.wandb")
    run = OfflineRun()
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run = record.run
            run.config |= _items(record.run.config.update)
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            for item in record.summary.update:
                *parents, key = [item.key] if item.key else list(item.nested_key)
                _node(run.summary, parents)[key] = json.loads(item.value_json)
            for item in record.summary.remove:
                *parents, key = [item.key] if item.key else list(item.nested_key)
                _node(run.summary, parents).pop(key, None)
        elif kind == "config":
            run.config |= _items(record.config.update)
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def _node(tree: dict, path: list[str]) -> dict:
    """The dict at ``path`` in ``tree`` (made on the way): a nested key's parent."""
    for key in path:
        tree = tree.setdefault(key, {})
    return tree


def _items(items) -> dict:
    """``key: value`` items as a dict, a nested key's value nested under its parents."""
    tree: dict = {}
    for item in items:
        *parents, key = [item.key] if item.key else list(item.nested_key)
        _node(tree, parents)[key] = json.loads(item.value_json)
    return tree
