"""configs/metafile.yaml: every config's recorded results, the CHANGELOG's columns, and where
``seglab report`` / ``seglab compare`` show them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seglab.config.walk import mmseg_config_dir
from seglab.errors import UserError
from seglab.results.compare import summary_rows
from seglab.results.metafile import (
    METAFILE,
    NONE,
    REFERENCE_LABEL,
    SEED_LABEL,
    load_metafile,
    lookup,
)
from seglab.results.records import RunResults
from seglab.results.report import build_report
from tests.conftest import REPO_ROOT, VOC_DEMO

CONFIGS = REPO_ROOT / "configs"
CHANGELOG = CONFIGS / "CHANGELOG.md"
BASELINE = CONFIGS / "upernet" / "upernet_r50_4xb4-30e_voc12aug-512x512.py"


def changelog_rows() -> dict[str, dict[str, str]]:
    """config path (relative to configs/) -> {column header: cell}, from every table."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in CHANGELOG.read_text().splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif cells[0].startswith("`"):
            config = cells[0].strip("`")
            assert config not in rows, f"{config} has two rows in {CHANGELOG.name}"
            rows[config] = dict(zip(header, cells, strict=True))
    return rows


def test_every_config_has_one_metafile_entry() -> None:
    configs = sorted(str(p.relative_to(REPO_ROOT)) for p in CONFIGS.rglob("*.py")
                     if "_base_" not in p.parts)
    entries = load_metafile()
    assert sorted(e.config for e in entries.values()) == configs
    assert all(Path(e.config).stem == name for name, e in entries.items())
    models = yaml.safe_load(METAFILE.read_text())["Models"]
    assert len(models) == len(entries), "a Name appears twice"


def test_changelog_columns_are_the_metafile_values() -> None:
    rows = changelog_rows()
    entries = load_metafile()
    assert sorted(f"configs/{c}" for c in rows) == sorted(e.config for e in entries.values())
    for config, row in rows.items():
        entry = lookup(config)
        assert entry is not None
        # a table without the column records nothing there
        assert row.get("mIoU (seed)", NONE) == entry.seed_cell(), config
        assert row.get("reference", NONE) == entry.reference_cell(), config
    cells = {e.name: e.seed_cell() for e in entries.values()}
    assert cells["segformer_mit-b2_ade20k_v1.1"] == "~0"
    assert cells["segformer_mit-b2_ade20k_v1.2"] == "NaN loss"
    assert cells["segformer_mit-b2_ade20k_v1.0"] == "26.60 (v1 line; v1.0 or v1.4, ambiguous)"


def test_references_are_mmseg_model_zoo_figures() -> None:
    zoo = {}
    for metafile in mmseg_config_dir().glob("*/metafile.yaml"):
        for model in yaml.safe_load(metafile.read_text()).get("Models", []):
            results = model["Results"]
            for result in [results] if isinstance(results, dict) else results:
                zoo.setdefault(model["Name"], result["Metrics"].get("mIoU"))
    references = [e for e in load_metafile().values() if e.reference_name]
    assert len(references) == 4
    for entry in references:
        assert zoo[entry.reference_name] == entry.reference_miou, entry.name


def test_an_inconsistent_status_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "metafile.yaml"
    bad.write_text("Models:\n- Name: x\n  Config: configs/x.py\n  Status: recorded\n")
    with pytest.raises(UserError, match="'recorded' exactly when Results"):
        load_metafile(bad)


def test_compare_shows_the_recorded_and_reference_miou() -> None:
    def run(name: str, config: Path | None) -> RunResults:
        return RunResults(name, ["a"], {"IoU": [50.0]}, {"mIoU": 50.0}, config_path=config)

    runs = [run("seed", Path("work_dirs/upernet_r50_voc12_v1.0/upernet_r50_voc12_v1.0.py")),
            run("baseline", Path("/elsewhere") / BASELINE.name), run("demo", VOC_DEMO),
            run("notes", None)]
    rows = {row[0]: row[1:] for row in summary_rows(runs)}
    assert rows[SEED_LABEL] == ["67.91", NONE, NONE, NONE]
    assert rows[REFERENCE_LABEL] == [NONE, "74.82", NONE, NONE]
    assert list(rows)[:2] == ["mIoU", "mean IoU of the table"]
    assert [r[0] for r in summary_rows(runs[2:])] == ["mIoU", "mean IoU of the table"]


def test_report_shows_the_reference_beside_the_run(tmp_path: Path) -> None:
    """A work dir as a run of the 30-epoch UPerNet baseline leaves it: the dumped config
    (same file name) and a class_metrics record. No training needed."""
    from mmengine.config import Config

    work_dir = tmp_path / "upernet_run"
    (work_dir / "class_metrics").mkdir(parents=True)
    Config.fromfile(str(BASELINE)).dump(str(work_dir / BASELINE.name))
    record = {"classes": ["background", "aeroplane"], "per_class": {"IoU": [90.0, 61.5]},
              "summary": {"aAcc": 93.1, "mIoU": 75.75}}
    (work_dir / "class_metrics" / "val_epoch_30.json").write_text(json.dumps(record))
    html_path, md_path = build_report(work_dir, overlays=0)
    md = md_path.read_text()
    assert "| mIoU | 75.75 |" in md
    assert f"| {REFERENCE_LABEL} | 74.82 |" in md and SEED_LABEL not in md
    assert "74.82" in html_path.read_text()
