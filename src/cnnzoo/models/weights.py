"""Loading torchvision-format weights from local files; nothing is downloaded."""

import logging
import os
import zipfile
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from cnnzoo.errors import ConfigError

log = logging.getLogger(__name__)


# How a torch.save file begins: its zip format (PyTorch >= 1.6), or the older pickle format.
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80\x02")


def read_torch_file(path: str | os.PathLike, what: str | None = None, mmap: bool = False) -> dict:
    """``torch.load(path, weights_only=True)`` of a checkpoint or state dict on the CPU; a file
    that is not one is a ConfigError naming it as ``what`` does (the setting that gave it,
    ``ckpt_path=...``): not a PyTorch file at all (a results.json, a .pth that is an HTML
    page: its first bytes), or one PyTorch does not load safely (the reason, without torch's
    advice to load it unsafely)."""
    path = Path(path).expanduser()
    what = what or f"the checkpoint {path}"
    try:
        with open(path, "rb") as f:
            start = f.read(16)
    except OSError as e:
        raise ConfigError(f"{what}: cannot read it ({e.strerror}).") from None
    if not start.startswith(TORCH_FILE_STARTS):
        raise ConfigError(
            f"{what} is not a PyTorch checkpoint or state dict (it begins {start!r}): "
            "give a .ckpt of a run's checkpoints/ folder, or a .pth written by torch.save."
        )
    if start.startswith(TORCH_FILE_STARTS[0]) and not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise ConfigError(
            f"{what} is cut short ({size:,} bytes; a PyTorch file is a zip archive and this one "
            "has no end: a copy or download that stopped?). Copy it again, or choose another "
            "checkpoint."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()
        raise ConfigError(
            f"{what} cannot be loaded safely ({type(e).__name__}: {(reason or [''])[0][:300]})."
        ) from None


def published_weights(name: str) -> tvm.WeightsEnum:
    """torchvision's first ImageNet weights for ``name`` (IMAGENET1K_V1): those trained with the
    classic recipe this project reproduces, not the later improved-recipe V2 weights."""
    return tvm.get_model_weights(name).IMAGENET1K_V1


def hub_cache_file(name: str) -> tuple[Path, str]:
    """Where torch hub keeps ``published_weights(name)``, and their URL."""
    url = published_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def load_weights(net: nn.Module, name: str, path: str | None = None) -> None:
    """Load a torchvision-format state dict into ``net`` (architecture ``name``).

    ``path=None`` means torchvision's published weights from the torch hub cache. A classifier
    whose class count differs from the file's is kept freshly initialised (fine-tuning), and
    the log says so; auxiliary heads that ``net`` does not have are skipped. Any other
    difference is an error naming the file and the architecture.
    """
    if path is None:
        file, url = hub_cache_file(name)
        if not file.is_file():
            raise ConfigError(
                f"model.pretrained=true: {file} is not there and cnnzoo downloads nothing. "
                f"Fetch {url} on a machine with internet and put it at that path (or set "
                "TORCH_HOME), or give the file with model.weights=/path/to/file.pth."
            )
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"model.weights={path}: no such file (for model {name!r}).")
    state = read_torch_file(file, f"model.weights={file}")
    if "state_dict" in state and isinstance(state["state_dict"], dict):  # a Lightning checkpoint
        state = net_state_dict(state, source=str(file))  # a cnnzoo run's: its network's weights
        if not state:
            raise ConfigError(
                f"model.weights={file} is a Lightning checkpoint without a cnnzoo network "
                "(no net.* weights): give a torchvision-format state dict (.pth), or a "
                "checkpoint from a cnnzoo run's checkpoints/ folder."
            )
    _load_matching(net, name, file, state)


def net_state_dict(
    checkpoint_path: str | os.PathLike | dict, ema: bool = False, source: str | None = None
) -> dict[str, torch.Tensor]:
    """The network's torchvision-format state dict from a cnnzoo (Lightning) checkpoint (a path,
    or the checkpoint already loaded, read from ``source``): the raw weights, or with
    ``ema=True`` their moving average (``callbacks=ema``)."""
    if isinstance(checkpoint_path, dict):
        checkpoint, checkpoint_path = checkpoint_path, source or "the checkpoint"
    else:
        checkpoint = read_torch_file(checkpoint_path)
    if not ema:
        state, prefix = checkpoint["state_dict"], "net."
    else:
        saved = [s["average"] for s in checkpoint.get("callbacks", {}).values() if "average" in s]
        if not saved:
            raise ConfigError(
                f"{checkpoint_path} holds no EMA weights: train with callbacks=ema to have them."
            )
        state, prefix = saved[0], "module."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_matching(net: nn.Module, name: str, file: Path, state: dict) -> None:
    own = net.state_dict()
    resized = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not _is_aux(k)]
    unexpected = [k for k in state if k not in own and not _is_aux(k)]
    head = _classifier_prefix(net)
    if missing or unexpected or any(not (k.startswith(head) or _is_aux(k)) for k in resized):
        shapes = [
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in resized[:3]
        ]
        raise ConfigError(
            f"weights {file} do not fit model {name!r}: missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}, shape mismatches {shapes}. Is the file of "
            f"another architecture? Give weights of {name!r}, or pick the model they belong to."
        )
    keep = {k: v for k, v in state.items() if k in own and k not in resized}
    net.load_state_dict(keep, strict=False)
    if resized:
        log.warning(
            "Loaded %s into %s except its classifier (%s: %d classes in the file, %d here), "
            "which stays freshly initialised for fine-tuning.",
            file,
            name,
            head.rstrip("."),
            state[head + "weight"].shape[0],
            own[head + "weight"].shape[0],
        )
    else:
        log.info("Loaded weights %s into %s.", file, name)


def _is_aux(key: str) -> bool:
    return key.startswith(("aux1.", "aux2.", "AuxLogits."))


def _classifier_prefix(net: nn.Module) -> str:
    """The final Linear layer's name, plus a dot (``fc.``, ``classifier.6.``, ...)."""
    last = [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and not _is_aux(n + ".")]
    return last[-1] + "."
