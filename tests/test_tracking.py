"""W&B mode: online only with credentials, offline otherwise, WANDB_MODE honoured."""

import pytest

from cnnzoo.tracking import wandb_credentials_present, wandb_mode


def test_no_credentials_means_offline(offline_env):
    assert not wandb_credentials_present()
    assert wandb_mode() == "offline"


def test_api_key_means_online(offline_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"


@pytest.mark.parametrize("host", ["api.wandb.ai", "wandb login"])
def test_netrc_entry_means_online(offline_env, monkeypatch, tmp_path, host):
    """An entry for api.wandb.ai, or the one `wandb login` writes (wandb 0.31: for
    api.forge.coreweave.com, which was taken for no credentials: offline runs)."""
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    if host == "wandb login":
        from wandb.sdk.lib.urls import DEFAULT_BASE_URL
        from wandb.sdk.lib.wbauth import write_netrc_auth

        write_netrc_auth(host=DEFAULT_BASE_URL, api_key="k" * 40)  # what `wandb login` does
    else:
        netrc.write_text(f"machine {host}\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a server of one's own
    assert wandb_mode() == "offline"


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


def test_unreachable_server_falls_back_to_an_offline_run(
    offline_env, monkeypatch, tmp_path, caplog
):
    import wandb

    from cnnzoo import tracking
    from cnnzoo.tracking import wandb_logger

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # credentials: the logger goes online ...
    monkeypatch.setattr(tracking, "unreachable", lambda url: None)  # (a TCP connection opens)
    real_init, modes = wandb.init, []

    def init(**kwargs):  # ... and the server cannot be reached
        modes.append(kwargs.get("mode"))
        assert "anonymous" not in kwargs  # (wandb 0.31: "The anonymous setting has no effect")
        if kwargs.get("mode") == "online":
            raise wandb.errors.CommError("Network error (ConnectionError), entering retry loop.")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = wandb_logger(save_dir=str(tmp_path), project="p")
    try:
        run = logger.experiment
        run.log({"x": 1.0})
        assert modes == ["online", "offline"] and run.offline
        assert list((tmp_path / "wandb").glob("offline-run-*"))
        assert "could not start the online run (CommError" in caplog.text
    finally:
        wandb.finish()


def test_a_server_out_of_reach_is_offline_at_once(offline_env, monkeypatch, tmp_path, caplog):
    """A compute node without a route out: wandb.init retried for 90 s (its init_timeout)
    before failing; a TCP connection that cannot open decides it in moments."""
    import socket

    import wandb

    from cnnzoo.tracking import unreachable, wandb_logger

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    real_init, modes = wandb.init, []

    def init(**kwargs):
        modes.append(kwargs.get("mode"))
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = wandb_logger(save_dir=str(tmp_path), project="p")
    try:
        assert logger.experiment.offline and modes == ["offline"]  # online was never tried
        assert f"cannot be reached from this machine (127.0.0.1:{port}: " in caplog.text
    finally:
        wandb.finish()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # wandb's way out: its own
    assert unreachable(f"http://127.0.0.1:{port}") is None
