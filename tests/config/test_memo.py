"""mmengine's config work once per input: yapf once per text (yapf's own output), the
``mmseg::`` package look-ups once per process."""

from __future__ import annotations

from mmengine.config import Config

from seglab.config import memo as config_memo
from tests.conftest import VOC_DEMO


def _unmemoised_pretty_text(cfg: Config, memo: config_memo.FormatMemo) -> str:
    from mmengine.config import config as mmengine_config

    mmengine_config.FormatCode = memo.format_code
    try:
        return cfg.pretty_text
    finally:
        mmengine_config.FormatCode = memo


def test_rereading_a_config_formats_it_once_and_gives_yapfs_own_text() -> None:
    memo = config_memo.install()
    assert config_memo.install() is memo  # idempotent: no memo around a memo
    cfg = Config.fromfile(str(VOC_DEMO))
    expected = _unmemoised_pretty_text(cfg, memo)

    hits = memo.hits
    assert cfg.pretty_text == expected
    assert cfg.pretty_text == expected
    assert memo.hits >= hits + 1  # the second read did not run yapf

    cfg.train_cfg.max_epochs = 99  # a changed config is formatted anew, not served stale
    changed = cfg.pretty_text
    assert "max_epochs=99" in changed and changed == _unmemoised_pretty_text(cfg, memo)


def test_the_memo_is_bounded() -> None:
    calls: list[str] = []

    def fake_format(text: str, style_config=None) -> tuple[str, bool]:
        calls.append(text)
        return text.upper(), True

    memo = config_memo.FormatMemo(fake_format)
    for i in range(config_memo.MEMO_SIZE + 1):
        assert memo(f"x{i}", style_config={"a": 1}) == (f"X{i}", True)
    assert memo("x1", style_config={"a": 1}) == ("X1", True) and memo.hits == 1
    assert memo("x1", style_config={"a": 2}) == ("X1", True)  # another style: formatted anew
    memo("x0", style_config={"a": 1})  # the oldest entry was dropped
    assert calls.count("x0") == 2 and calls.count("x1") == 2


def test_found_packages_are_looked_up_once_and_misses_every_time() -> None:
    calls: list[str] = []

    def lookup(package: str) -> bool:
        calls.append(package)
        return package == "mmsegmentation"

    found = config_memo.FoundPackageMemo(lookup)
    assert found("mmsegmentation") and found("mmsegmentation")
    assert calls == ["mmsegmentation"]
    assert not found("not_installed") and not found("not_installed")
    assert calls.count("not_installed") == 2  # installing it mid-process is seen


def test_mmseg_scoped_configs_load_the_same_with_one_package_scan(monkeypatch) -> None:
    from mmengine.config import config as mmengine_config

    config_memo.install()
    scans: list[str] = []
    real = mmengine_config.is_installed.lookup
    monkeypatch.setattr(mmengine_config.is_installed, "lookup",
                        lambda package: scans.append(package) or real(package))
    monkeypatch.setattr(mmengine_config.is_installed, "_found", {})
    first = Config.fromfile(str(VOC_DEMO)).to_dict()
    assert Config.fromfile(str(VOC_DEMO)).to_dict() == first
    assert scans == ["mmsegmentation"]  # one scan for every mmseg:: reference of both loads
