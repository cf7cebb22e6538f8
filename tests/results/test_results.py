"""Results a researcher reads at a glance: records, TensorBoard scalars, compare, report, infer."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.errors import UserError
from seglab.results.compare import class_rows, run_compare
from seglab.results.records import load_results
from tests.conftest import REPO_ROOT, VOC_DEMO, run_cli

# verbatim excerpts of the seeds' notes (../shared/seeds/000_*.txt, 002_*.txt), so CI on a
# bare clone parses exactly what the researchers pasted
FIXTURES = Path(__file__).parent.parent / "fixtures"
ADE_NOTES = FIXTURES / "seed000_ade20k_test_output.txt"
VOC_NOTES = FIXTURES / "seed002_voc_tables.txt"
SEEDS = REPO_ROOT.parent / "shared" / "seeds"


@pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds not next to this checkout")
def test_fixtures_are_the_seeds_words() -> None:
    for fixture, seed in ((ADE_NOTES, "000_*.txt"), (VOC_NOTES, "002_*.txt")):
        notes = next(SEEDS.glob(seed)).read_text()
        body = [line for line in fixture.read_text().splitlines() if not line.startswith("# ")]
        assert all(line in notes for line in body), fixture.name
        assert load_results(next(SEEDS.glob(seed))).per_class == load_results(
            fixture).per_class


def test_seed000_ade20k_table_parses_to_150_classes_at_26_60() -> None:
    results = load_results(ADE_NOTES)
    assert len(results.classes) == 150
    assert results.classes[:3] == ["wall", "building", "sky"]
    assert round(results.mean("IoU"), 2) == 26.60
    assert results.summary == {"aAcc": 74.09, "mIoU": 26.6, "mAcc": 36.25}


def test_compare_the_seed002_tables_flags_the_bicycle_regression(tmp_path: Path) -> None:
    runs = [load_results(f"{VOC_NOTES}#1"), load_results(f"{VOC_NOTES}#2")]
    rows = class_rows(runs, threshold=1.0)
    assert rows[0].name == "bicycle" and rows[0].values == [64.18, 42.82]
    assert rows[0].delta == pytest.approx(-21.36) and rows[0].flag == "REGRESSION"
    assert sorted(r.name for r in rows if r.flag == "REGRESSION") == ["bicycle", "tvmonitor"]
    assert all(r.delta == pytest.approx(r.values[1] - r.values[0]) for r in rows)
    out = tmp_path / "cmp.html"
    text = run_compare([f"{VOC_NOTES}#1", f"{VOC_NOTES}#2"], out=str(out))
    assert "| bicycle | 64.18 | 42.82 | -21.36 | REGRESSION |" in text
    assert "mean IoU of the table | 67.91 | 75.24" in text
    assert "flag-regression" in out.read_text()
    with pytest.raises(UserError, match="2 per-class table"):
        load_results(f"{VOC_NOTES}#3")


@pytest.mark.slow
def test_a_file_without_a_table_is_one_clear_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("no results here\n")
    result = run_cli("compare", str(notes), str(notes))
    assert result.returncode == 2 and "no per-class table found" in result.stderr


def test_training_records_per_class_results_every_validation(voc_two_epochs) -> None:
    _, work_dir = voc_two_epochs
    records = {r.stem for r in (work_dir / "class_metrics").glob("val_epoch_*.json")}
    assert {"val_epoch_1", "val_epoch_2"} <= records  # one per validation
    record = json.loads((work_dir / "class_metrics" / "val_epoch_2.json").read_text())
    assert len(record["classes"]) == 21 and len(record["confusion"]) == 21
    assert (work_dir / "class_metrics" / "val_epoch_2.csv").is_file()
    assert record["summary"]["mIoU"] == pytest.approx(
        round(np.nanmean([np.nan if v is None else v for v in record["per_class"]["IoU"]]), 2),
        abs=0.011)


@pytest.mark.slow
def test_tensorboard_holds_the_per_class_scalars(voc_root: Path, tmp_path: Path) -> None:
    """A run of its own process: mmengine's visualizer is one instance per process, so runs
    made earlier in the test session would share (and write into) one event folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli("train", str(VOC_DEMO), "--work-dir", str(tmp_path), "--data-root",
                     str(voc_root), "--cfg-options", "train_cfg.max_epochs=1",
                     "train_dataloader.dataset.indices=32")
    assert result.returncode == 0, result.stderr[-2000:]
    (events_dir,) = {p.parent for p in tmp_path.glob("*/vis_data/events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events_dir))
    accumulator.Reload()
    assert "val/Acc/background" in accumulator.Tags()["scalars"]
    record = json.loads((tmp_path / "class_metrics" / "val_epoch_1.json").read_text())
    logged = 0
    for name, value in zip(record["classes"], record["per_class"]["IoU"], strict=True):
        if value is None:
            continue  # absent from validation: NaN is not logged
        events = accumulator.Scalars(f"val/IoU/{name}")
        assert [(e.step, e.value) for e in events] == [(1, pytest.approx(value, rel=1e-5))]
        logged += 1
    assert logged >= 5


@pytest.mark.slow
def test_report_is_self_contained_and_renders(voc_two_epochs, tmp_path: Path) -> None:
    _, work_dir = voc_two_epochs
    run = tmp_path / "run"
    shutil.copytree(work_dir, run)
    result = run_cli("report", str(run), "--overlays", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    page = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "refers to the network"
    assert page.count("<svg") >= 4  # loss, lr, mIoU curves + the per-class bar chart
    assert page.count("data:image/png;base64,") == 9  # 3 x (image, truth, prediction)
    assert "aeroplane" in page and "its pixels predicted as" in page
    assert "| class | IoU | Acc |" in (run / "report.md").read_text()
    from seglab.cli import main  # the same command again, in this process: deterministic

    assert main(["report", str(run), "--overlays", "3"]) == 0
    pattern = re.compile(r"data:image/png;base64,[^'\"]+")
    assert pattern.findall((run / "report.html").read_text()) == pattern.findall(page)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed "
                    "(.ci/run installs it with apt-get; that failed or was skipped)")
@pytest.mark.slow
def test_report_screenshot_shows_the_curves_and_the_table(voc_two_epochs, tmp_path: Path) -> None:
    from seglab.results.report import build_report

    _, work_dir = voc_two_epochs
    run = tmp_path / "run"
    shutil.copytree(work_dir, run)
    html_path, _ = build_report(run, overlays=0)
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1200,2600",
                    html_path.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)

    def share(colour: tuple[int, int, int], tolerance: int = 12) -> float:
        return float((np.abs(pixels - colour).max(axis=2) <= tolerance).mean())

    assert share((31, 119, 180)) > 0.0001  # matplotlib's line colour: the curves are drawn
    assert share((255, 255, 255), 0) < 0.97  # not a blank page
    red_cell = tuple(int(255 * (0.55 + 0.45 * c)) for c in (0.85, 0.3, 0.3))
    assert share(red_cell, 3) > 0.0003  # coloured per-class table cells (IoU near 0)


@pytest.mark.slow
def test_infer_writes_index_masks_and_overlays(voc_two_epochs, voc_root: Path,
                                               tmp_path: Path) -> None:
    _, work_dir = voc_two_epochs
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)
    out = tmp_path / "out"
    args = ["infer", str(VOC_DEMO), str(work_dir / "epoch_2.pth"), str(folder), "--out", str(out)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    for image in images:
        mask = np.asarray(Image.open(out / f"{image.stem}.png"))
        with Image.open(image) as src:
            assert mask.shape == (src.height, src.width)
        assert mask.max() < 21 and (out / f"{image.stem}_overlay.jpg").is_file()
    again = run_cli(*args)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_compare_two_work_dirs_with_curves_and_config_diff(voc_two_epochs,
                                                           tmp_path: Path) -> None:
    _, work_dir = voc_two_epochs
    other = tmp_path / "other_run"
    shutil.copytree(work_dir, other)
    record_path = other / "class_metrics" / "val_epoch_2.json"
    record = json.loads(record_path.read_text())
    ious = record["per_class"]["IoU"]
    best = max((i for i, v in enumerate(ious) if v is not None), key=lambda i: ious[i])
    ious[best] -= 5.0
    record_path.write_text(json.dumps(record))
    (other / "class_metrics" / "test.json").unlink(missing_ok=True)
    config = next(other.glob("*.py"))
    config.write_text(config.read_text().replace("lr=0.001", "lr=0.0005"))
    baseline = tmp_path / "baseline"
    shutil.copytree(work_dir, baseline)
    (baseline / "class_metrics" / "test.json").unlink(missing_ok=True)

    out = tmp_path / "cmp.html"
    text = run_compare([str(baseline), str(other)], threshold=1.0, out=str(out))
    rows = class_rows([load_results(baseline), load_results(other)])
    changed = [(r.name, round(r.delta, 6), r.flag) for r in rows if r.delta]
    assert changed == [(record["classes"][best], -5.0, "REGRESSION")]
    assert "`optim_wrapper.optimizer.lr`: `0.001` -> `0.0005`" in text
    page = out.read_text()
    assert page.count("<svg") >= 2 and "other_run" in page


@pytest.mark.slow  # builds the model (untrained) and runs it
def test_infer_skips_files_that_are_not_images_and_writes_the_others(tmp_path: Path,
                                                                     capsys) -> None:
    """An empty .jpg and a text file named .png stopped the whole run with mmcv's traceback;
    a folder's non-image file (notes.txt) is left alone. Untrained weights: the model only
    has to run."""
    import torch

    from seglab.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name, colour in (("a.jpg", "red"), ("b.png", "blue"), ("c.png", "green")):
        Image.new("RGB", (40, 30), colour).save(folder / name)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "fake.png").write_text("not an image\n")
    (folder / "notes.txt").write_text("shot on 2024-05-01\n")
    checkpoint = tmp_path / "untrained.pth"
    torch.save({"meta": {}, "state_dict": {}}, checkpoint)  # the missing keys: a warning
    out = tmp_path / "out"
    code = main(["infer", str(VOC_DEMO), str(checkpoint), str(folder), "--out", str(out),
                 "--batch-size", "2"])
    stdout, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [
        f"{stem}{end}" for stem in "abc" for end in (".png", "_overlay.jpg")]
    assert np.asarray(Image.open(out / "a.png")).shape == (30, 40)
    assert "seglab infer: 3 image(s) -> " in stdout
    skipped = [line for line in err.splitlines() if line.startswith("seglab infer: skipped")]
    assert skipped == [
        f"seglab infer: skipped {folder / 'empty.jpg'}: not a readable image (empty file, "
        "0 bytes)",
        f"seglab infer: skipped {folder / 'fake.png'}: not a readable image (OpenCV decodes "
        "no image from its 13 bytes)"]
    assert "notes.txt" not in err
    assert err.rstrip().splitlines()[-1] == (
        f"seglab: error: 2 of 5 image file(s) skipped, not readable images (listed above); "
        f"the other 3 were written to {out}. Fix: replace or delete the skipped files; to add "
        "their outputs later, run infer on just them with the same --out.")


def recorded_run(work_dir: Path, classes: list[str]) -> Path:
    """A work dir holding one validation record, written by the writer ClassMetricsHook uses
    (no training): per-class IoU 10, 20, ... and a confusion matrix."""
    from seglab.evaluation.record import write_record

    n = len(classes)
    write_record({"classes": classes, "summary": {"mIoU": 5.0 * (n + 1)},
                  "per_class": {"IoU": [10.0 * (i + 1) for i in range(n)], "Acc": [50.0] * n},
                  "support": [9] * n,
                  "confusion": [[6 if i == j else 1 for j in range(n)] for i in range(n)]},
                 work_dir / "class_metrics" / "val_epoch_1")
    return work_dir


# data, not TeX: unbalanced, invalid and valid mathtext, and HTML's own characters
TEX_LIKE_NAMES = ["$\\foo$", "cost_$a_b_c$", "$x^2$", "a$b", "<b>&co"]


def _svg_text(name: str) -> str:
    """``name`` as matplotlib's SVG writer puts text (svg.fonttype none): XML-escaped."""
    return name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.parametrize("chart", ["bar", "line"])
def test_charts_draw_names_as_typed_not_as_tex(chart: str) -> None:
    from seglab.results import render

    if chart == "bar":
        svg = render.bar_chart(TEX_LIKE_NAMES, [10.0] * len(TEX_LIKE_NAMES), "IoU")
    else:  # one line per run: the run names are the legend
        svg = render.line_chart({n: [(1, 1.0), (2, 0.5)] for n in TEX_LIKE_NAMES}, "loss",
                                "step")
    for name in TEX_LIKE_NAMES:
        assert f">{_svg_text(name)}<" in svg, name


def test_report_of_classes_named_like_tex_is_written_with_the_names_as_typed(
        tmp_path: Path, capsys) -> None:
    from seglab.cli import main

    run = recorded_run(tmp_path / "run", TEX_LIKE_NAMES)
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    page = (run / "report.html").read_text()
    chart = page[page.index("<svg"):]
    for name in TEX_LIKE_NAMES:
        assert f"<td>{html.escape(name)}</td>" in page, name  # the tables: escaped for HTML
        assert f">{_svg_text(name)}<" in chart, name  # the bar chart: drawn literally
    assert "<b>&co" not in page
    assert f"| {TEX_LIKE_NAMES[0]} |" in (run / "report.md").read_text()


NOT_RECORDS = {
    "data-doctor-report": (json.dumps({"datasets": [], "errors": 0, "warnings": 1,
                                       "classes_absent_from_val": []}),
                           r"no 'classes' or 'per_class' key \(its keys: 'datasets', 'errors', "
                           r"'warnings', 'classes_absent_from_val'\)"),
    "list": ("[1, 2]", r"it holds a list, where a record is a JSON object with 'classes' and "
                       r"'per_class'"),
    "number": ("42", r"it holds a number"),
    "truncated": ('{"classes": ["road", "sky"], "summary": {"mIoU": 5',
                  r"not valid JSON \(Expecting ',' delimiter at line 1 column \d+\), as a record "
                  r"cut short by a run stopped mid-write is\. Fix: delete it"),
    "per-class-too-short": (json.dumps({"classes": ["road", "sky"], "per_class": {"IoU": [1]}}),
                            r"'per_class' 'IoU' is not a list of 2 numbers"),
}


@pytest.mark.parametrize("kind", NOT_RECORDS)
def test_compare_names_a_json_file_that_is_not_a_record(tmp_path: Path, capsys,
                                                        kind: str) -> None:
    from seglab.cli import main

    text, reason = NOT_RECORDS[kind]
    other = tmp_path / "report.json"
    other.write_text(text)
    baseline = recorded_run(tmp_path / "baseline", ["road", "sky"])
    assert main(["compare", str(baseline), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seglab: error: {other}: not a seglab record: "), err
    assert re.search(reason, err) and "Fix: " in err and "Traceback" not in err, err
    assert err.count("\n") == 1


def test_compare_names_a_work_dirs_record_cut_short(tmp_path: Path, capsys) -> None:
    from seglab.cli import main

    baseline = recorded_run(tmp_path / "baseline", ["road", "sky"])
    crashed = recorded_run(tmp_path / "crashed", ["road", "sky"])
    newest = crashed / "class_metrics" / "val_epoch_2.json"
    newest.write_text((crashed / "class_metrics" / "val_epoch_1.json").read_text()[:40])
    assert main(["compare", str(baseline), str(crashed)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seglab: error: {newest}: not a seglab record: not valid JSON"), err
    assert "its work dir then uses the previous record" in err
