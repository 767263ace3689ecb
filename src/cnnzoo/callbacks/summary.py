"""Lightning's model summary at the start of training, with the network's FLOPs filled in."""

from typing import Any

from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.utilities.model_summary import get_human_readable_count


class NetworkSummary(RichModelSummary):
    """Lightning's rich model summary, with the FLOPs of one image at ``model.input_size``.

    Lightning counts FLOPs only by running the module's ``example_input_array`` through it at
    fit start (a forward pass on the device, a compilation under ``model.compile``), and without
    one printed "Total FLOPs: 0" for every network. This summary takes the count made on the
    meta device (``cnnzoo.build.model_gmacs``: no memory, no arithmetic) and shows it on the
    ``net`` row and in the total, in Lightning's unit (two FLOPs per multiply-add; the papers'
    "FLOPs" and ``results.json``'s ``gmacs`` count multiply-adds, half as many).

    Args:
        flops: FLOPs of one eval forward pass of one image.
        max_depth: module depth shown (1: the network, the loss, the metrics).
    """

    def __init__(self, flops: float, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)
        self.flops = int(flops)

    def summarize(  # an instance method here (Lightning's is static): it needs self.flops
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        names = dict(summary_data).get("Name", [])
        shown = get_human_readable_count(self.flops)
        data = [
            (column, [shown if n == "net" else v for n, v in zip(names, values, strict=True)])
            if column == "FLOPs"
            else (column, values)
            for column, values in summary_data
        ]
        RichModelSummary.summarize(
            data,
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops=self.flops,
            **summarize_kwargs,
        )
