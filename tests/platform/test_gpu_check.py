"""The prepared device check runs end to end in its CPU-sized mode, so it cannot rot
between the sessions that have a GPU to run it on."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.device_check


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_stage_and_writes_its_results(tmp_path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--tiny",
                             "--out", str(out), "--work", str(tmp_path / "work"),
                             "--jobs", "2"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=1500, env={**os.environ, "OUT": ""})
    assert (out / "gpu_check.json").is_file() and (out / "gpu_check.md").is_file()
    data = json.loads((out / "gpu_check.json").read_text())
    stages = data["stages"]
    assert result.returncode == 0, json.dumps(stages, indent=1)[-6000:] + result.stderr[-2000:]
    assert list(stages) == ["environment", "configs", "resume", "test", "throughput"]
    assert all(s["status"] == "ok" for s in stages.values())
    assert data["environment"]["mmcv_ops_cuda"]  # the probe answered
    rows = stages["configs"]["configs"]
    assert rows and all(r["finite"] and r["iterations"] == 2 for r in rows)
    resume = stages["resume"]
    assert resume["straight_rc"] == resume["resumed_rc"] == 0
    assert resume["killed_at_checkpoint"].endswith(".pth")
    assert stages["test"]["table_printed"] and stages["test"]["classes"] == 21
    rows = stages["throughput"]["rows"]
    for row in rows:
        assert row["mmseg"]["img_per_s"] > 0 and row["seglab"]["img_per_s"] > 0
        assert row["mmseg"]["step_cv"] >= 0 and row["seglab"]["step_cv"] >= 0
    # the first GPU process of the stage is not always the same side's
    assert [row["order"][0] for row in rows] == ["mmseg", "seglab"]
    markdown = (out / "gpu_check.md").read_text()
    assert "| SegFormer-MiT-B2 512x512 |" in markdown and "seglab/mmseg" in markdown


def test_stages_that_would_not_fit_the_deadline_are_skipped_and_say_so(tmp_path) -> None:
    """A device lease ends at a fixed time: a stage that cannot finish before it is skipped
    (results so far intact) instead of being cut off mid-way."""
    import time

    from seglab.platform.gpu_check import run_check

    data = run_check(tmp_path / "out", tiny=True, only=("throughput",), work=tmp_path / "w",
                     deadline=time.time() + 30)
    assert data["stages"]["environment"]["status"] == "ok"
    skipped = data["stages"]["throughput"]
    assert skipped["status"] == "skipped" and "--only throughput" in skipped["why"]
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert saved["stages"]["throughput"]["status"] == "skipped"
