"""report.py over run folders that are broken or unfinished: listed with their status, never a
crash; the numbers come from results.json (the sweep test checks them against real runs)."""

import csv
import json

import pytest

from cnnzoo.report import main


def run_folder(root, name, results: str | None, model="resnet18"):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    optim = "optim:\n  _target_: torch.optim.SGD\n  lr: 0.1\n  momentum: 0.9\n"
    (folder / ".hydra" / "config.yaml").write_text(f"model:\n  name: {model}\n{optim}")
    if results is not None:
        (folder / "results.json").write_text(results)
    return folder


def test_broken_and_unfinished_runs_are_listed_not_fatal(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    good = {"status": "finished", "model": "alexnet", "num_params": 61_100_840, "gmacs": 0.714,
            "epochs": 90, "lr": 0.01, "wall_time_s": 600.0,
            "best_val": {"val/acc_top1": 0.565, "val/acc_top5": 0.79},
            "metrics": {"test/err_top1": 0.435, "test/err_top5": 0.21},
            "throughput": {"images_per_s": 1234.5}}  # fmt: skip
    run_folder(sweep, "0_alexnet", json.dumps(good), model="alexnet")
    run_folder(sweep, "1_resnet18", '{"status": "fini')  # cut off mid-write
    run_folder(sweep, "2_resnet18", json.dumps({"status": "running", "model": "resnet18"}))
    run_folder(sweep, "3_resnet18", None)  # no results yet
    wrapped = (
        "InstantiationException: Error in call to target 'X':\nConfigError('a | b')\nfull_key: data"
    )
    run_folder(sweep, "4_resnet18", json.dumps({"status": "failed", "error": wrapped}))
    assert main([str(sweep)]) == 0
    (row,) = [
        line for line in (sweep / "report.md").read_text().splitlines() if "4_resnet18" in line
    ]
    assert row.endswith(" |") and "a \\| b" in row  # one table row, whatever the error's lines
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    first = rows[0]
    assert first["run"] == "0_alexnet"  # the only finished run first
    assert float(first["val_err_top1"]) == 1 - 0.565 and float(first["val_err_top5"]) == 1 - 0.79
    assert float(first["params_m"]) == 61.10084 and float(first["gflops"]) == 0.714
    assert first["optimizer"] == "SGD m=0.9" and float(first["images_per_s"]) == 1234.5
    status = {r["run"]: r["status"] for r in rows}
    assert status["1_resnet18"] == "corrupt results.json"
    assert status["2_resnet18"] == "running"
    assert status["3_resnet18"].startswith("no results.json")
    assert (sweep / "report.png").stat().st_size > 5_000


def test_an_out_that_is_a_file_is_named_and_kept(tmp_path, capsys):
    """``--out notes.txt`` (a file): FileExistsError's traceback; the file stays as it was."""
    run_folder(tmp_path / "sweep", "0_resnet18", json.dumps({"status": "finished"}))
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    assert main([str(tmp_path / "sweep"), "--out", str(notes)]) == 2
    assert f"--out {notes} is a file; give a folder" in capsys.readouterr().err
    assert notes.read_text() == "mine\n"


def test_a_folder_it_cannot_write_is_one_line(tmp_path, capsys, monkeypatch):
    import cnnzoo.report

    def refused(folders, out, wandb):
        raise PermissionError(13, "Permission denied")  # (root ignores a read-only folder)

    monkeypatch.setattr(cnnzoo.report, "report", refused)
    assert main([str(tmp_path), "--out", str(tmp_path / "shared")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the report into {tmp_path / 'shared'} (Permission denied)" in err


def test_a_running_record_without_its_process_is_listed_as_stopped(tmp_path):
    """A run killed with SIGKILL (or on a node that went down) keeps "running" in its record
    for ever; the lock its process held on the folder tells a live run from a gone one."""
    from cnnzoo.tasks.folders import OWNER_FILE, own_folder, release_folder

    sweep = tmp_path / "sweep"
    running = json.dumps({"status": "running", "model": "resnet18"})
    gone, alive, _ = (run_folder(sweep, name, running) for name in ("0_gone", "1_alive", "2_old"))
    (gone / OWNER_FILE).write_text("pid 1 on elsewhere\n")  # (no process holds it)
    own_folder(alive)
    try:
        assert main([str(sweep)]) == 0
    finally:
        release_folder(alive)
    with open(sweep / "report.csv") as f:
        status = {r["run"]: r["status"] for r in csv.DictReader(f)}
    assert status["0_gone"] == "stopped while running (killed, or its machine went down)"
    assert status["1_alive"] == status["2_old"] == "running"  # (2_old: no owner file, can't tell)
    assert (gone / OWNER_FILE).read_text() == "pid 1 on elsewhere\n"  # only read


def test_no_runs_is_an_error_naming_the_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no runs found" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2


def test_learning_curves_label_runs_by_what_the_sweep_varied(tmp_path):
    from cnnzoo.curves import learning_curves

    sweep = tmp_path / "sweep"
    for i, (model, lr) in enumerate([("resnet18", 0.1), ("resnet18", 0.01), ("alexnet", 0.1)]):
        history = [{"epoch": e, "val/acc_top1": 0.1 * (e + 1) + lr} for e in range(3)]
        folder = run_folder(sweep, f"{i}_{model}", json.dumps({"status": "finished",
                            "val_history": history}), model=model)  # fmt: skip
        (folder / ".hydra" / "overrides.yaml").write_text(
            f"- model={model}\n- optim.lr={lr}\n- trainer.max_epochs=3\n"
        )
    run_folder(sweep, "3_broken", '{"status": "fini')  # no curve, no crash
    curves = learning_curves(sorted(p for p in sweep.iterdir()))
    assert [curve.label for curve in curves] == [
        "model=resnet18, optim.lr=0.1",
        "model=resnet18, optim.lr=0.01",
        "model=alexnet, optim.lr=0.1",
    ]
    assert curves[1].epochs == [0, 1, 2]
    assert curves[1].val_err == pytest.approx([89.0, 79.0, 69.0])
    assert curves[1].train_err == [None, None, None]  # (a record from before train errors)
    assert main([str(sweep)]) == 0
    assert (sweep / "curves.png").stat().st_size > 10_000


def test_the_findings_state_what_the_curves_show_in_numbers(tmp_path):
    """As the lecture quotes Krizhevsky et al.'s Figure 1: which run reached a training error
    first and how many times sooner; how far apart the runs ended; each one's val-train gap."""
    sweep = tmp_path / "sweep"
    train = {
        "relu": [0.6, 0.4, 0.25, 0.2] + [0.15] * 8,
        "tanh": [0.7 - 0.04 * e for e in range(12)],
        "sigmoid": [0.9, 0.91, 0.895] * 4,  # (never learns: left out of the race, named)
    }
    for i, activation in enumerate(("relu", "tanh", "sigmoid")):
        history = [{"epoch": e, "val/acc_top1": 0.1 if activation == "sigmoid" else 0.6 - t,
                    "train/err_top1": t}
                   for e, t in enumerate(train[activation])]  # fmt: skip
        folder = run_folder(sweep, f"{i}_resnet18", json.dumps({"status": "finished",
                            "val_history": history}))  # fmt: skip
        (folder / ".hydra" / "overrides.yaml").write_text(f"- model.activation={activation}\n")
    assert main([str(sweep)]) == 0
    report = (sweep / "report.md").read_text()
    # tanh's best training error is 26% (epoch 12): the level every run reached
    assert ("Training error 26%: reached at epoch 3 by model.activation=relu, at epoch 12 by "
            "model.activation=tanh (4.0x the epochs).") in report  # fmt: skip
    assert ("model.activation=sigmoid did not learn: its training error stayed within 2 points "
            "of its first epoch's (89.5-91.0%)") in report  # fmt: skip
    assert ("Final validation error: model.activation=relu 55.0%, model.activation=sigmoid "
            "90.0% (35.0 points apart); model.activation=relu: 55.0%, model.activation=tanh: "
            "66.0%, model.activation=sigmoid: 90.0%.") in report  # fmt: skip
    assert "model.activation=relu: +40.0, model.activation=tanh: +40.0" in report
    from cnnzoo.curves import learning_curves, lines_of

    (val_epochs, val), (train_epochs, trained) = lines_of(
        learning_curves([sweep / "0_resnet18"])[0]
    )
    assert val_epochs == train_epochs == list(range(1, 13))  # drawn at the same epochs
    assert trained[2] == pytest.approx(25.0) and val[2] == pytest.approx(65.0)
