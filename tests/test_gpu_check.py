"""``make gpu-check``'s script, tried on the CPU: a lent GPU's minutes must not be spent finding
its bugs. Its stages run in separate calls (as over a GPU lease, between transfers) and one
report gathers them; a failing run is a row, not the end of the check."""

import importlib.util
import io
import json
import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gpu_check")]  # (module fixtures)

CPU = ["--set", "trainer=cpu", "--set", "trainer.precision=32", "--set", "model.input_size=32",
       "--set", "model.eval_resize=36", "--set", "model.channels_last=false"]  # fmt: skip


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # (its JPEG writers run in a process pool)
    spec.loader.exec_module(module)
    return module


def table_row(report: str, *cells: str) -> list[str]:
    (line,) = [r for r in report.splitlines() if r.startswith("| " + " | ".join(cells) + " |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_stages_measure_and_one_report_gathers_them(gpu_check, tmp_path, monkeypatch):
    out = tmp_path / "check.md"
    small = ["--out", str(out), "--batch-size", "4", "--warmup", "1", *CPU]
    synthetic = ["--only", "synthetic", "--models", "resnet50", "--steps", "3"]
    assert gpu_check.main([*small, *synthetic]) == 0
    jpegs = ["--classes", "3", "--train-per-class", "6", "--jpegs", str(tmp_path / "jpegs")]
    one_epoch = ["--only", "workers", "--set", "trainer.max_epochs=1"]
    runs, train_run = [], gpu_check.train_run
    monkeypatch.setattr(gpu_check, "train_run", lambda o, out: runs.append(o) or train_run(o, out))
    assert gpu_check.main([*small, *jpegs, *one_epoch]) == 0
    assert gpu_check.compose_cfg(runs[0]).trainer.max_epochs == 1  # (--set replaces the 2)
    monkeypatch.undo()
    written = (tmp_path / "jpegs" / "facts.json").stat().st_mtime_ns
    dali = importlib.util.find_spec("nvidia") and importlib.util.find_spec("nvidia.dali")
    loader = [*small, *jpegs, "--only", "loader", "--loader-batches", "2",
              "--dali-variants", "read_ahead=2;reader"]  # fmt: skip
    assert gpu_check.main(loader) == (0 if dali else 1)
    tuned = ["--only", "dali", "--dali-tuning", "queue=3"]
    assert gpu_check.main([*small, *jpegs, *tuned]) == (0 if dali else 1)
    assert (tmp_path / "jpegs" / "facts.json").stat().st_mtime_ns == written  # (reused)

    assert gpu_check.main([*small, "--only", "tests", "--tests-k", "bf16"]) == 0
    report = out.read_text()
    gpu = gpu_check.torch.cuda.is_available()
    assert re.search(rf"GPU tests: 1 {'passed' if gpu else 'skipped'}, \d+ deselected in .* "
                     r"\(-k bf16\)\n", report)  # fmt: skip
    assert "Each run: logger=none " in report and "trainer=cpu" in report
    rows = [json.loads(line) for line in (tmp_path / "check.jsonl").read_text().splitlines()]
    assert [row.get("variant", row.get("facts", "tests")) for row in rows] == [
        "eager", "jpeg", "workers (auto)", "jpeg", "workers alone (no training)",
        "dali alone (no training)", "dali alone (no training), read_ahead=2",
        "dali alone (no training), reader", "jpeg", "dali (queue=3)", "tests"]  # fmt: skip
    # a loader alone: the 2 batches of 4 after the warm-up batch, over the time they took
    for row in rows[4 : 8 if dali else 5]:
        assert row["images_per_s"] * row["wall_s"] == pytest.approx(8)
        assert row["step_ms"] == pytest.approx(1000 * row["wall_s"] / 2)
        assert 0 < row["pass_start_s"] < 60  # (the seconds to its first batch)
    start = table_row(report, "-", "JPEG", "workers alone (no training)")[7]
    assert start == f"{rows[4]['pass_start_s']:.2f}"
    assert table_row(report, "resnet50", "JPEG", "workers (auto)")[7] == "-"
    assert table_row(report, "-", "JPEG", "workers alone (no training)")[5] == "-"
    if not dali:
        assert "not installed" in rows[5]["error"]
    speed = rows[0]["images_per_s"]
    eager = table_row(report, "resnet50", "synthetic", "eager")
    assert eager[3] == f"{speed:,.0f}" and float(eager[4]) == round(rows[0]["step_ms"], 1) > 0
    workers = table_row(report, "resnet50", "JPEG", "workers (auto)")
    assert float(workers[3].replace(",", "")) > 0
    assert "18 generated 500x375 JPEGs" in report
    dali_row = table_row(report, "resnet50", "JPEG", "dali (queue=3)")
    assert (float(dali_row[3].replace(",", "")) > 0) if dali else "not installed" in dali_row[3]
    # the cost table: each ResNet-50 recipe's GPU-hours from the measured images/s
    recipe = table_row(report, "resnet50_he2016", "resnet50")
    epochs = gpu_check.compose_cfg(["experiment=resnet50_he2016"]).trainer.max_epochs
    hours = epochs * 1_281_167 / speed / 3600
    assert recipe[2] == str(epochs) and recipe[3] == eager[3]
    assert float(recipe[4].replace(",", "")) == pytest.approx(hours, rel=0.01)
    assert "vgg16_simonyan2014" not in report  # (no vgg16 figure: no row)


def test_dali_tunings_are_read_as_written(gpu_check):
    from cnnzoo.data import dali

    spec = "read_ahead=3,queue=4,hw_decoder_load=1.0,affine=false,stream=true,reader"
    tuning = gpu_check.tuning_of(spec)
    assert tuning == dali.Tuning(3, 4, {"hw_decoder_load": 1.0, "affine": False}, stream=True)
    shipped = dali.TUNING
    with gpu_check.dali_tuned("queue=5"):
        assert dali.TUNING.queue == 5
    assert dali.TUNING is shipped


def test_a_failing_run_is_a_row_and_the_check_fails(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.md"
    args = ["--out", str(out), "--only", "synthetic", "--steps", "1", "--warmup",
            "5", "--batch-size", "2", *CPU]  # fmt: skip
    (tmp_path / "check.jsonl").write_text('{"model": "resnet18", "inp')  # a killed call's
    assert gpu_check.main([*args, "--models", "resnet18,nosuchnet"]) == 1
    report = out.read_text()
    assert re.search(r"\| resnet18 \| synthetic \| eager \| RuntimeError\('no training step past "
                     "the warm-up", report)  # fmt: skip
    assert "| nosuchnet | synthetic | eager | " in report
    captured = capsys.readouterr()
    assert "failed: resnet18 eager, nosuchnet eager" in captured.out
    assert "check.jsonl:1 is not a whole row; left out" in captured.err
    assert [row["model"] for row in gpu_check.read_rows(tmp_path / "check.jsonl")] == [
        "resnet18", "nosuchnet"]  # fmt: skip


def test_without_a_gpu_it_says_how_to_try_it(gpu_check, tmp_path, capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert gpu_check.main(["--out", str(tmp_path / "check.md")]) == 1
    assert "--set trainer=cpu" in capsys.readouterr().err
    assert not (tmp_path / "check.md").exists()
    with pytest.raises(SystemExit):
        gpu_check.main(["--only", "tests,jpeg"])


@pytest.fixture(scope="module")
def gpu_kit():
    spec = importlib.util.spec_from_file_location("gpu_kit", ROOT / "benchmarks" / "gpu_kit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_wheel(folder: Path) -> None:
    """A minimal pure-Python wheel (pip installs it with no index)."""
    info = "kit_probe-1.0.dist-info"
    with zipfile.ZipFile(folder / "kit_probe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("kit_probe.py", "VALUE = 7\n")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: kit-probe\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                   "Tag: py3-none-any\n")  # fmt: skip
        z.writestr(f"{info}/RECORD", "")


def test_the_kit_installs_its_wheels_and_dali_once_every_part_is_there(gpu_kit, tmp_path, capsys):
    kit, site, tree = tmp_path / "kit", tmp_path / "site", tmp_path / "tree"
    (kit / "wheels").mkdir(parents=True)
    probe_wheel(kit / "wheels")
    (tree / "nvidia" / "dali").mkdir(parents=True)
    (tree / "nvidia" / "dali" / "__init__.py").write_bytes(os.urandom(3000).hex().encode())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        archive.add(tree, arcname=".")
    record = gpu_kit.write_parts(buffer.getvalue(), kit, part_mb=2000 / 2**20)
    assert len(record["parts"]) >= 2
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    (kit / "kit.json").write_text(json.dumps({"python": python, **record}))
    args = SimpleNamespace(dir=kit, site=site)

    second = kit / record["parts"][1]["name"]
    carried = second.read_bytes()
    second.unlink()  # not carried yet: the wheels install, DALI waits
    assert gpu_kit.install(args) == 0
    out = capsys.readouterr().out
    assert f"parts missing here: {second.name}" in out and "NVIDIA DALI: not installed" in out
    assert (site / "kit_probe.py").read_text() == "VALUE = 7\n"
    assert not (site / "nvidia").exists()

    second.write_bytes(carried[:-1] + b"x")  # damaged on the way
    with pytest.raises(SystemExit, match=f"{second.name} is damaged"):
        gpu_kit.install(args)
    assert not (site / "nvidia").exists()

    second.write_bytes(carried)
    assert gpu_kit.install(args) == 0
    assert "NVIDIA DALI: installed" in capsys.readouterr().out
    assert (site / "nvidia/dali/__init__.py").read_bytes() == (
        tree / "nvidia/dali/__init__.py").read_bytes()  # fmt: skip

    with pytest.raises(SystemExit, match="pack the kit where pip works"):
        gpu_kit.install(SimpleNamespace(dir=tmp_path / "elsewhere", site=site))
    with pytest.raises(SystemExit, match="is not empty"):
        gpu_kit.pack(SimpleNamespace(dir=kit))  # (nothing downloaded, nothing overwritten)
    (kit / "kit.json").write_text(json.dumps({"python": "3.99", **record}))
    with pytest.raises(SystemExit, match="packed for Python 3.99.*--python " + python):
        gpu_kit.install(args)


def test_the_kit_leaves_out_what_its_python_never_loads(gpu_kit, tmp_path):
    root = tmp_path / "site"
    (root / "pkg" / "include").mkdir(parents=True)
    (root / "pkg" / "include" / "api.h").write_text("")
    for name in ["m.cpython-312-x86_64-linux-gnu.so", "m.cpython-313-x86_64-linux-gnu.so",
                 "m.cpython-313t-x86_64-linux-gnu.so", "libplain.so.1", "m.py"]:  # fmt: skip
        (root / "pkg" / name).write_text("not an ELF file")  # (strip leaves it as it is)
    gpu_kit.strip_tree(root, "3.12")
    assert sorted(p.name for p in (root / "pkg").iterdir()) == [
        "libplain.so.1", "m.cpython-312-x86_64-linux-gnu.so", "m.py"]  # fmt: skip


def test_a_test_skipped_on_the_gpu_fails_the_tests_stage(gpu_check, monkeypatch):
    """On a lent GPU with the kit installed, the GPU and DALI tests must run: a skip (DALI not
    importable, no CUDA seen) is a check that did not happen, so the stage fails, naming it;
    the two-GPU test is the one skip a single GPU may show."""

    def pytest_says(*lines):
        stdout = [f"{line}\n" for line in [*lines, "7 passed, 1 skipped in 9.00s"]]
        proc = SimpleNamespace(stdout=iter(stdout), wait=lambda: 0)
        monkeypatch.setattr(gpu_check.subprocess, "Popen", lambda *a, **k: proc)
        return gpu_check.gpu_tests("", on_gpu=True)

    dali = "SKIPPED [1] tests/test_dali.py:16: NVIDIA DALI is not installed"
    row = pytest_says(dali)
    assert row["failed"] and "skipped on a GPU: " + dali in row["tests"]
    row = pytest_says("SKIPPED [1] tests/test_gpu.py:130: needs two GPUs")
    assert not row["failed"] and row["tests"] == "7 passed, 1 skipped in 9.00s"
    assert not gpu_check.gpu_tests("", on_gpu=False)["failed"]  # (the CPU: skips expected)
