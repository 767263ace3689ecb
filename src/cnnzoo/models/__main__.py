"""``python -m cnnzoo.models``: a table of every architecture (counted here, and torchvision's
published ImageNet accuracy of its weights for reference)."""

from rich.console import Console
from rich.table import Table

from cnnzoo.models.stats import all_model_stats


def main() -> None:
    table = Table(title="cnnzoo architectures (1000 classes)", title_justify="left")
    for column in ("model", "params", "GMACs", "input", "top-1 %", "top-5 %"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for s in all_model_stats():
        table.add_row(
            s.name,
            f"{s.params:,}",
            f"{s.gmacs:.3f}",
            f"{s.input_size}",
            f"{s.published_top1:.2f}",
            f"{s.published_top5:.2f}",
        )
    console = Console()
    console.print(table)
    console.print(
        "params and GMACs (multiply-adds, one image, eval mode) counted by cnnzoo; top-1/top-5:"
        " torchvision's published single-crop ImageNet val accuracy of its weights. GoogLeNet's"
        " count excludes its auxiliary heads, Inception v3's includes its own, as published."
    )


if __name__ == "__main__":
    main()
