"""The LightningModule: cross-entropy (with auxiliary heads), top-k metrics, injected optimiser."""

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cnnzoo.checkpointing import last_checkpoint_path
from cnnzoo.errors import ConfigError, UserError, check_switch, is_number, is_whole
from cnnzoo.optimization import OptimizerFactory, check_schedule, configure, head_parameters
from cnnzoo.schedules import catch_up_plateaus, follow_horizons


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite."""


def topk_metrics(num_classes: int) -> MetricCollection:
    """Top-1 and top-5 accuracy as the ILSVRC defines them: the fraction of images whose label
    is among the k highest scores (micro average; torchmetrics' default would be macro)."""
    ks = [k for k in (1, 5) if k <= num_classes]
    return MetricCollection(
        {f"acc_top{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro") for k in ks}
    )


FREEZE = ("none", "backbone")


def _numbers(value) -> bool:
    """A list (or tuple) of plain numbers."""
    return isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )


def split_outputs(output: Tensor | Sequence[Tensor | None]) -> tuple[Tensor, list[Tensor]]:
    """(main logits, auxiliary logits) of a plain tensor or a (named) tuple such as
    torchvision's ``GoogLeNetOutputs`` / ``InceptionOutputs``; absent heads (None) dropped."""
    if isinstance(output, Tensor):
        return output, []
    main, *aux = output
    return main, [a for a in aux if a is not None]


def view_probabilities(net: Callable[[Tensor], Tensor], views: Tensor) -> Tensor:
    """Class probabilities of (N, V, 3, H, W) images: softmax of each view's logits, averaged
    over the V views (ten-crop, flip), as Krizhevsky et al. 2012 averaged their ten patches."""
    n, v = views.shape[:2]
    logits = net(views.flatten(0, 1)).float()
    return logits.softmax(dim=1).view(n, v, -1).mean(dim=1)


class ClassificationModule(pl.LightningModule):
    """Trains ``net`` with cross-entropy; loss = main + sum_i aux_weights[i] * aux_i.

    Args:
        net: a plain ``nn.Module`` returning logits, or (main, aux...) logits in training.
        optimizer: a partial optimiser (``_partial_: true``); completed with the parameters.
        lr: the learning rate to give the optimiser (None: the one ``optimizer`` carries).
        no_decay_norm_bias: put BatchNorm parameters and biases (every parameter of fewer than
            two dimensions) in a group without weight decay.
        label_smoothing: of the training targets (Szegedy et al. 2016, sec. 7); eval losses
            use the plain targets.
        scheduler: ``{"scheduler": partial, "interval": "epoch"|"step", ...}`` or None.
        aux_weights: weight of each auxiliary head's loss, in the order the net returns them.
        arch: the architecture name, kept in checkpoints so a mismatch can be named.
        channels_last: run the net and its inputs in NHWC memory format; None: when the run's
            device is a CUDA GPU (where cuDNN's NHWC kernels are faster; on the CPU they are not).
        compile: ``torch.compile`` the net in place (its state dict keys stay plain).
        freeze: ``none``, or ``backbone``: only the classifier (the net's last linear layer)
            trains, and BatchNorm keeps its statistics (a linear probe).
        head_lr_mult: the classifier's learning rate is ``lr`` times this (fine-tuning).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        lr: float | None = None,
        no_decay_norm_bias: bool = False,
        label_smoothing: float = 0.0,
        scheduler: dict[str, Any] | None = None,
        aux_weights: Sequence[float] = (),
        arch: str = "",
        channels_last: bool | None = None,
        compile: bool = False,
        freeze: str = "none",
        head_lr_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if freeze not in FREEZE:
            raise ConfigError(f"model.freeze={freeze!r}: choose one of {list(FREEZE)}.")
        if not _numbers(aux_weights):
            raise ConfigError(
                f"model.aux_weights={aux_weights!r}: give one loss weight per auxiliary head, as "
                "a list: [0.3,0.3] for GoogLeNet's two, [0.4] for Inception v3's, [] for none."
            )
        if not is_whole(num_classes, 2):  # (torchmetrics' ValueError through Hydra for 1)
            raise ConfigError(
                f"data.num_classes={num_classes!r}: a classifier needs 2 classes or more (with "
                "data=imagefolder: one folder per class under ROOT/train/)."
            )
        check_schedule(scheduler, head_lr_mult)
        check_switch("optim.no_decay_norm_bias", no_decay_norm_bias)
        if not is_number(label_smoothing) or not label_smoothing < 1:
            raise ConfigError(f"label_smoothing={label_smoothing!r}: give a number in [0, 1).")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        if freeze == "backbone":
            head = set(map(id, head_parameters(net)))
            for parameter in net.parameters():
                parameter.requires_grad_(id(parameter) in head)
        self._use_memory_format(bool(channels_last))
        if compile:
            self.net.compile()  # nn.Module.compile: no _orig_mod. wrapper in the state dict
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.train_metrics = topk_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = topk_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = topk_metrics(num_classes).clone(prefix="test/")

    def _use_memory_format(self, channels_last: bool) -> None:
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)

    def train(self, mode: bool = True) -> "ClassificationModule":
        """As ``nn.Module.train``; with a frozen backbone its BatchNorm layers stay in eval
        mode, so their running statistics stay those of the weights it started from."""
        super().train(mode)
        self._keep_norm_statistics()
        return self

    def on_train_epoch_start(self) -> None:
        self._keep_norm_statistics()  # (Lightning sets modes module by module, not via train())

    def _keep_norm_statistics(self) -> None:
        if self.hparams.get("freeze") == "backbone":
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last is None:
            self._use_memory_format(self.trainer.strategy.root_device.type == "cuda")

    def forward(self, images: Tensor) -> Tensor:
        """Main logits, (N, num_classes), whatever heads the net also returns."""
        return split_outputs(self._net(images))[0]

    def _net(self, images: Tensor) -> Tensor | Sequence[Tensor | None]:
        return self.net(images.contiguous(memory_format=self.memory_format))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        main, aux = split_outputs(self._net(images))
        weights = list(self.hparams.aux_weights)
        if len(aux) > len(weights):
            raise ConfigError(
                f"the net returned {len(aux)} auxiliary outputs but model.aux_weights has "
                f"{len(weights)} weights ({weights}); give one weight per head."
            )
        smoothing = self.hparams.label_smoothing
        loss_main = F.cross_entropy(main, labels, label_smoothing=smoothing)
        loss = loss_main
        for i, (logits, weight) in enumerate(zip(aux, weights, strict=False), start=1):
            loss_aux = F.cross_entropy(logits, labels, label_smoothing=smoothing)
            loss = loss + weight * loss_aux
            self.log(f"train/loss_aux{i}", loss_aux)
        if aux:
            self.log("train/loss_main", loss_main)
        if not torch.isfinite(loss):
            self._stop_on_non_finite(loss)
        self.log("train/loss", loss, prog_bar=True)  # per step
        if labels.is_floating_point():  # mixup/cutmix class probabilities: score the top class
            labels = labels.argmax(dim=1)
        self.train_metrics.update(main.detach(), labels)
        return loss

    def _stop_on_non_finite(self, loss: Tensor) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else None
        last = last_checkpoint_path(self.trainer)
        last = last if last is not None and last.is_file() else "none saved yet"
        raise NonFiniteLossError(
            f"the training loss is {loss.item()} at step {self.global_step} (epoch "
            f"{self.current_epoch}, batch {self.trainer.fit_loop.epoch_loop.batch_idx}) with lr "
            f"{lr:.4g}; training stopped. The last good checkpoint stays: {last}. Try a lower "
            "optim.lr, warm-up (scheduler.warmup_epochs=5), gradient clipping "
            "(trainer.gradient_clip_val=1.0), and check the data for broken images."
        )

    def score(self, images: Tensor, labels: Tensor, net: nn.Module | None = None):
        """(scores, mean loss) of a device batch as every evaluation scores it: logits of
        (N, 3, H, W) images, or the view-averaged probabilities of (N, V, 3, H, W) views
        (ten-crop, flip). ``net``: another network of the same architecture (the EMA average)
        in place of ``self.net``, fed in the same memory format."""

        def forward(x: Tensor) -> Tensor:
            if net is None:
                return self(x)
            return split_outputs(net(x.contiguous(memory_format=self.memory_format)))[0]

        if images.ndim == 5:  # (N, views, 3, H, W): ten-crop or flip evaluation
            scores = view_probabilities(forward, images)
            return scores, F.nll_loss(scores.clamp_min(1e-12).log(), labels)
        scores = forward(images)
        return scores, F.cross_entropy(scores, labels)

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        scores, loss = self.score(images, labels)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, prog_bar=stage == "val")
        getattr(self, f"{stage}_metrics").update(scores, labels)
        return scores.detach()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The batch's scores (to callbacks: the W&B dashboard's confusion matrix)."""
        return self._eval_step(batch, "test")

    def log_accuracy_and_error(self, metrics: MetricCollection) -> None:
        """Log each accuracy and its error (1 - accuracy), computed over every rank's images."""
        for name, acc in metrics.compute().items():
            self.log(name, acc, prog_bar=name.endswith("top1"))
            self.log(name.replace("/acc_", "/err_"), 1.0 - acc)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self.log_accuracy_and_error(self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_accuracy_and_error(self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_accuracy_and_error(self.test_metrics)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture or class count, naming both."""
        saved = checkpoint.get("hyper_parameters", {})
        for key in ("arch", "num_classes"):
            if key in saved and saved[key] != self.hparams[key]:
                raise ConfigError(
                    f"the checkpoint is of {key} {saved[key]!r} but this run's model has "
                    f"{key} {self.hparams[key]!r}; choose model={saved.get('arch')} "
                    f"(num_classes={saved.get('num_classes')}) or another checkpoint."
                )

    def configure_optimizers(self) -> Any:
        optimisation = configure(self, self.optimizer_factory, self.scheduler_config)
        self._horizons = optimisation.horizons
        return optimisation.lightning

    def on_train_start(self) -> None:
        from cnnzoo.callbacks.record import RunRecord, callback_of

        follow_horizons(self.trainer, self._horizons)  # (a resumed run: cnnzoo.schedules)
        record = callback_of(self.trainer, RunRecord)
        catch_up_plateaus(self.trainer, record.entries if record is not None else [])
