"""The loss understands auxiliary heads: loss = main + weight x aux, metrics on the main logits."""

from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.errors import ConfigError
from cnnzoo.module import ClassificationModule, split_outputs

Outputs = namedtuple("Outputs", ["logits", "aux_logits2", "aux_logits1"])  # like GoogLeNet's


class ThreeHeads(nn.Module):
    """Main head and two auxiliary heads in training; main only in eval (like torchvision)."""

    def __init__(self) -> None:
        super().__init__()
        self.main, self.aux1, self.aux2 = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        if self.training:
            return Outputs(self.main(x), self.aux2(x), self.aux1(x))
        return self.main(x)


def make_module(net: nn.Module, aux_weights=(0.3, 0.3)) -> ClassificationModule:
    return ClassificationModule(
        net=net,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        num_classes=3,
        aux_weights=aux_weights,
    )


def test_training_loss_adds_weighted_auxiliary_losses():
    torch.manual_seed(0)
    net = ThreeHeads()
    module = make_module(net, aux_weights=(0.3, 0.5))
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = (
        F.cross_entropy(net.main(x), y)
        + 0.3 * F.cross_entropy(net.aux2(x), y)
        + 0.5 * F.cross_entropy(net.aux1(x), y)
    )
    module.train()
    loss = module.training_step((x, y), 0)
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())  # every head gets a gradient


def test_absent_aux_heads_are_ignored_and_forward_returns_main_logits():
    main, aux = torch.randn(2, 3), torch.randn(2, 3)
    assert split_outputs((main, None, aux))[1] == [aux]
    assert split_outputs(main) == (main, [])
    net = ThreeHeads().eval()
    module = make_module(net).eval()
    x = torch.randn(2, 4)
    assert torch.equal(module(x), net.main(x))


def test_more_aux_heads_than_weights_is_a_clear_error():
    module = make_module(ThreeHeads(), aux_weights=(0.3,))
    with pytest.raises(ConfigError, match="2 auxiliary outputs but model.aux_weights has 1"):
        module.training_step((torch.randn(2, 4), torch.tensor([0, 1])), 0)


def test_label_smoothing_applies_to_training_loss_only():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    module = ClassificationModule(net=net, optimizer=torch.optim.SGD, num_classes=3,
                                  label_smoothing=0.1)  # fmt: skip
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    logits = net(x)
    # By hand: (1 - eps) * CE(one-hot) + eps * mean over classes of -log p
    log_p = logits.log_softmax(1)
    nll = -log_p[torch.arange(6), y].mean()
    uniform = -log_p.mean()
    expected = 0.9 * nll + 0.1 * uniform
    assert module.training_step((x, y), 0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert expected.item() != pytest.approx(nll.item())
