"""W&B mode: online only with credentials, offline otherwise, WANDB_MODE honoured."""

import pytest

from cnnzoo.tracking import wandb_credentials_present, wandb_mode


def test_no_credentials_means_offline(offline_env):
    assert not wandb_credentials_present()
    assert wandb_mode() == "offline"


def test_api_key_means_online(offline_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"


def test_netrc_entry_means_online(offline_env, monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode() == "online"


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_wandb_mode_is_honoured(offline_env, monkeypatch, mode):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", mode)
    assert wandb_mode() == mode


def test_forced_online_without_credentials_goes_offline_instead_of_prompting(
    offline_env, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode() == "offline"
