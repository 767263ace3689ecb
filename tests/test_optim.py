"""Each optimiser config does, step for step, what its formula says (computed here by hand)."""

import pytest
import torch
from helpers import compose_train
from torch import nn

from cnnzoo.build import build_module, effective_lr

LR, WD, TAU = 0.1, 1e-4, 0.9
TARGET = torch.tensor([[1.0, -2.0], [0.5, 3.0]])


class Tiny(nn.Module):
    """A weight matrix and a bias; loss 0.5 ||W - T||^2 + 0.5 ||b - 1||^2, so dL/dW = W - T."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[0.3, 0.7], [-1.2, 2.0]]))
        self.bias = nn.Parameter(torch.tensor([0.2, -0.4]))

    def loss(self) -> torch.Tensor:
        return 0.5 * ((self.weight - TARGET) ** 2).sum() + 0.5 * ((self.bias - 1) ** 2).sum()

    def grads(self, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return w - TARGET, b - 1


def run_steps(optim: str, steps: int, extra: list[str] = (), tmp_path=None):
    cfg = compose_train([f"optim={optim}", f"model.lr={LR}", "scheduler=none", *extra],
                        out=tmp_path)  # fmt: skip
    module = build_module(cfg)
    module.net = Tiny()
    optimizer = module.configure_optimizers()
    for _ in range(steps):
        optimizer.zero_grad()
        module.net.loss().backward()
        optimizer.step()
    return module.net.weight.detach(), module.net.bias.detach()


def by_hand(update, steps: int, decay_bias: bool = True):
    """Apply ``update(param, grad, state, t) -> param`` to both parameters, ``steps`` times."""
    net = Tiny()
    w, b = net.weight.detach().clone(), net.bias.detach().clone()
    sw, sb = {}, {}
    for t in range(1, steps + 1):
        gw, gb = net.grads(w, b)
        w = update(w, gw, sw, t, WD)
        b = update(b, gb, sb, t, WD if decay_bias else 0.0)
    return w, b


def sgd(p, g, s, t, wd):
    return p - LR * g


def sgd_l2(p, g, s, t, wd):
    return p - LR * (g + wd * p)


def sgd_momentum(p, g, s, t, wd):
    s["v"] = TAU * s.get("v", 0) + g + wd * p
    return p - LR * s["v"]


def nesterov(p, g, s, t, wd):
    g = g + wd * p
    s["v"] = TAU * s.get("v", 0) + g
    return p - LR * (g + TAU * s["v"])


def rmsprop(p, g, s, t, wd, alpha=0.9, eps=1.0):
    g = g + 4e-5 * p if wd else g
    s["sq"] = alpha * s.get("sq", 0) + (1 - alpha) * g**2
    return p - LR * g / (s["sq"].sqrt() + eps)


def adamw(p, g, s, t, wd, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    p = p * (1 - lr * (0.05 if wd else 0.0))
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g**2
    m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
    return p - lr * m_hat / (v_hat.sqrt() + eps)


FORMULAS = {"sgd": sgd, "sgd_l2": sgd_l2, "sgd_momentum": sgd_momentum,
            "nesterov": nesterov, "rmsprop": rmsprop, "adamw": adamw}  # fmt: skip


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("optim", list(FORMULAS))
def test_optimiser_follows_its_formula(optim, steps, tmp_path):
    w, b = run_steps(optim, steps, tmp_path=tmp_path)
    hand_w, hand_b = by_hand(FORMULAS[optim], steps)
    torch.testing.assert_close(w, hand_w, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b, hand_b, rtol=1e-6, atol=1e-7)


def test_formulas_tell_the_optimisers_apart():
    """The hand formulas differ after two steps, so each test above pins its own optimiser."""
    results = [by_hand(f, 2)[0] for f in FORMULAS.values()]
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            assert not torch.allclose(results[i], results[j], rtol=0, atol=1e-7)


def test_no_decay_norm_bias_exempts_biases(tmp_path):
    w, b = run_steps("sgd_momentum", 2, ["optim.no_decay_norm_bias=true"], tmp_path)
    hand_w, hand_b = by_hand(sgd_momentum, 2, decay_bias=False)
    torch.testing.assert_close(w, hand_w, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b, hand_b, rtol=1e-6, atol=1e-7)
    _, decayed_b = by_hand(sgd_momentum, 2)
    assert not torch.allclose(b, decayed_b, rtol=0, atol=1e-7)


def test_linear_lr_scaling(tmp_path):
    base = ["model.lr=0.1", "data.batch_size=1024"]
    assert effective_lr(compose_train(base, out=tmp_path)) == pytest.approx(0.1)
    scaled = compose_train([*base, "optim.lr_scaling=linear"], out=tmp_path)
    assert effective_lr(scaled) == pytest.approx(0.4)
    assert build_module(scaled).configure_optimizers()["optimizer"].param_groups[0]["lr"] == (
        pytest.approx(0.4)
    )
