"""Export a trained network: ``python -m cnnzoo.export run=outputs/train/<run> format=...``.

- ``state_dict``: a torchvision-format state dict (``.pth``): loads with
  ``torchvision.models.<arch>(num_classes=N).load_state_dict`` (``model.small_input=true``
  runs have a smaller stem: load those with ``cnnzoo.models.create_model``);
- ``torchscript``: a traced module (``.pt``), loadable with ``torch.jit.load`` without cnnzoo;
- ``onnx``: an ONNX graph (``.onnx``), when the ``onnx`` package is installed
  (``pip install 'cnnzoo[onnx]'``).

Options (``key=value``): ``run=`` (required), ``format=state_dict``, ``ckpt=best|last|PATH``,
``ema=false``, ``out=PATH`` (default ``RUN/export/<model>.<ext>``; an existing file is kept
unless ``overwrite=true``).
"""

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cnnzoo.errors import ConfigError
from cnnzoo.files import replaced_atomically
from cnnzoo.tasks.cli import exit_on_user_error

SUFFIX = {"state_dict": ".pth", "torchscript": ".pt", "onnx": ".onnx"}


def parse(args: list[str]) -> dict[str, str]:
    options = {"format": "state_dict", "ckpt": "best", "ema": "false", "overwrite": "false"}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in {*options, "run", "out"}:
            raise ConfigError(
                f"{arg!r}: expected key=value, key one of run, format, ckpt, ema, out, overwrite."
            )
        options[key] = value
    if "run" not in options:
        raise ConfigError("give the run to export: python -m cnnzoo.export run=outputs/train/<run>")
    if options["format"] not in SUFFIX:
        raise ConfigError(f"format={options['format']!r}: choose one of {sorted(SUFFIX)}.")
    return options


def export(options: dict[str, str]) -> Path:
    from cnnzoo.tasks.restore import load_module, run_config

    run = Path(options["run"]).expanduser()
    cfg = OmegaConf.create({"run": str(run), "ckpt": options["ckpt"], "seed": 0, "paths": {}})
    saved = run / ".hydra" / "config.yaml"
    if saved.is_file():
        cfg.paths = OmegaConf.load(saved).get("paths", {})
    cfg = run_config(cfg)
    module, _ = load_module(cfg, ema=options["ema"].lower() == "true")
    net, fmt = module.net.eval(), options["format"]
    out = Path(options.get("out") or run / "export" / f"{cfg.model.name}{SUFFIX[fmt]}")
    if out.exists() and options["overwrite"].lower() != "true":
        raise ConfigError(f"{out} exists; choose out=... or overwrite=true.")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigError(
                "format=onnx needs the onnx package: pip install onnx onnxscript "
                "(or pip install 'cnnzoo[onnx]')."
            ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, 3, cfg.model.input_size, cfg.model.input_size)
    # (an export that fails or is interrupted leaves no half-written file under the name, and
    # overwrite=true keeps the old one until the new one is whole)
    with replaced_atomically(out) as partial:
        if fmt == "state_dict":
            torch.save(net.state_dict(), partial)
        elif fmt == "torchscript":
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(net, example), partial)
        else:
            torch.onnx.export(
                net, (example,), str(partial), input_names=["images"], output_names=["logits"]
            )
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> Path:
    return exit_on_user_error(lambda: export(parse(sys.argv[1:] if argv is None else argv)))()


if __name__ == "__main__":
    main()
