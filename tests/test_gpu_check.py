"""``make gpu-check``'s script, tried on the CPU: a lent GPU's minutes must not be spent finding
its bugs. Its stages run in separate calls (as over a GPU lease, between transfers) and one
report gathers them; a failing run is a row, not the end of the check."""

import importlib.util
import json
import re
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow

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


def test_the_stages_measure_and_one_report_gathers_them(gpu_check, tmp_path):
    out = tmp_path / "check.md"
    small = ["--out", str(out), "--batch-size", "4", "--warmup", "1", *CPU]
    synthetic = ["--only", "synthetic", "--models", "resnet50", "--no-compile", "--steps", "3"]
    assert gpu_check.main([*small, *synthetic]) == 0
    jpeg = ["--only", "jpeg", "--classes", "3", "--train-per-class", "6"]
    dali = importlib.util.find_spec("nvidia") and importlib.util.find_spec("nvidia.dali")
    assert gpu_check.main([*small, *jpeg]) == (0 if dali else 1)

    report = out.read_text()
    assert "Each run: logger=none " in report and "trainer=cpu" in report
    rows = [json.loads(line) for line in (tmp_path / "check.jsonl").read_text().splitlines()]
    assert [row.get("variant", row.get("facts")) for row in rows] == [
        "eager", "jpeg", "workers (auto)", "dali"]  # fmt: skip
    speed = rows[0]["images_per_s"]
    eager = table_row(report, "resnet50", "synthetic", "eager")
    assert eager[3] == f"{speed:,.0f}" and float(eager[4]) == round(rows[0]["step_ms"], 1) > 0
    workers = table_row(report, "resnet50", "JPEG", "workers (auto)")
    assert float(workers[3].replace(",", "")) > 0
    assert "18 generated 500x375 JPEGs" in report
    dali_row = table_row(report, "resnet50", "JPEG", "dali")
    assert (float(dali_row[3].replace(",", "")) > 0) if dali else "not installed" in dali_row[3]
    # the cost table: each ResNet-50 recipe's GPU-hours from the measured images/s
    recipe = table_row(report, "resnet50_he2016", "resnet50")
    epochs = gpu_check.compose_cfg(["experiment=resnet50_he2016"]).trainer.max_epochs
    hours = epochs * 1_281_167 / speed / 3600
    assert recipe[2] == str(epochs) and recipe[3] == eager[3]
    assert float(recipe[4].replace(",", "")) == pytest.approx(hours, rel=0.01)
    assert "vgg16_simonyan2014" not in report  # (no vgg16 figure: no row)


def test_a_failing_run_is_a_row_and_the_check_fails(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.md"
    args = ["--out", str(out), "--only", "synthetic", "--no-compile", "--steps", "1", "--warmup",
            "5", "--batch-size", "2", *CPU]  # fmt: skip
    assert gpu_check.main([*args, "--models", "resnet18,nosuchnet"]) == 1
    report = out.read_text()
    assert re.search(r"\| resnet18 \| synthetic \| eager \| RuntimeError\('no training step past "
                     "the warm-up", report)  # fmt: skip
    assert "| nosuchnet | synthetic | eager | " in report
    assert "failed: resnet18 eager, nosuchnet eager" in capsys.readouterr().out


def test_without_a_gpu_it_says_how_to_try_it(gpu_check, tmp_path, capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert gpu_check.main(["--out", str(tmp_path / "check.md")]) == 1
    assert "--set trainer=cpu" in capsys.readouterr().err
    assert not (tmp_path / "check.md").exists()
    with pytest.raises(SystemExit):
        gpu_check.main(["--only", "tests,benchmark"])
