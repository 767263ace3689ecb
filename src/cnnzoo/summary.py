"""The short, readable summary printed at the end of a run."""

from typing import Any

from rich.console import Console
from rich.table import Table


def plain_console(stderr: bool = False) -> Console:
    """A console that prints text as it is: paths, file and class names may hold ``[...]``
    (rich markup) or ``:x:`` (an emoji code), and ``root:x:0:0`` must not print as ``root❌0``."""
    return Console(stderr=stderr, soft_wrap=True, markup=False, emoji=False)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def print_summary(results: dict[str, Any], console: Console | None = None) -> None:
    """Architecture, epochs, wall time, top-1/top-5 accuracy and error, and where things are."""
    m = results["metrics"]
    minutes, seconds = divmod(results["wall_time_s"], 60)
    table = Table(title=f"cnnzoo: {results['model']}", show_header=True, title_justify="left")
    table.add_column("")
    for name in ("top-1 acc", "top-1 err", "top-5 acc", "top-5 err"):
        table.add_column(name, justify="right")
    for label, stage in (("val (last epoch)", "val"), ("best checkpoint on val", "test")):
        table.add_row(
            label,
            *(pct(m.get(f"{stage}/{kind}_top{k}")) for k in (1, 5) for kind in ("acc", "err")),
        )
    console = console or plain_console()
    console.print()
    console.print(table)
    console.print(
        f"epochs {results['epochs']}, steps {results['global_step']}, "
        f"wall time {int(minutes)}m {seconds:.0f}s, global batch {results['global_batch_size']}, "
        f"lr {results['lr']}"
    )
    if perf := results.get("throughput"):
        console.print(
            f"training: {perf['images_per_s']:.1f} images/s (all devices), "
            f"{perf['step_ms']:.1f} ms per step, {100 * perf['data_wait']:.0f}% waiting for data"
        )
    console.print(f"best checkpoint: {results['best_checkpoint'] or '-'}")
    console.print(f"config:          {results['config']}")
    console.print(f"results:         {results['output_dir']}/results.json")
    console.print(f"W&B run:         {results['wandb'] or '- (no W&B logger)'}")
