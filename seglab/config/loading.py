"""Load an experiment config and apply command-line overrides.

Every check here runs before a model, a dataset or a process group is built, so
bad input costs seconds and names the file, key and fix.
"""

from __future__ import annotations

import copy
import os.path as osp
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

from seglab.config.walk import leaf_datasets
from seglab.errors import UserError

DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


class ConfigError(UserError):
    """A config or command-line value seglab refuses before doing expensive work."""


# A config parsed (without its custom_imports) before the command's full load, handed over
# to it once: the command reads its config file and _base_ chain once.
_parsed_for_load: dict[str, Config] = {}


def parse_for_load(path: str | Path) -> Config:
    """Parse ``path`` without importing its ``custom_imports`` (for a look at the config
    before anything heavy is imported); the next :func:`load_config` of the same path takes
    this parse over instead of reading the files again. Raises what mmengine raises."""
    cfg = Config.fromfile(str(path), import_custom_modules=False)
    _parsed_for_load[str(Path(path).resolve())] = copy.deepcopy(cfg)
    return cfg


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None,
                data_root: str | None = None) -> Config:
    """Read ``path`` (with its ``_base_`` chain and ``custom_imports``) and merge overrides;
    ``data_root`` then points every dataset of every dataloader there."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (looked in {Path.cwd()})")
    try:
        cfg = _parsed_for_load.pop(str(path.resolve()), None)
        if cfg is None:
            cfg = Config.fromfile(str(path))
        elif cfg.get("custom_imports"):  # what fromfile does after parsing
            import_modules_from_strings(**cfg.custom_imports)
    except Exception as err:  # mmengine raises bare Exceptions for syntax/base errors
        raise ConfigError(f"{path}: cannot be loaded: {err}") from err
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root is not None:
        set_data_root(cfg, data_root)
    return cfg


def default_work_dir(config_path: str | Path) -> str:
    """``work_dirs/<config file stem>``, as mmseg's tools choose it."""
    return osp.join("work_dirs", Path(config_path).stem)




def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataset of every dataloader at ``data_root`` (``--data-root``)."""
    for loader in DATALOADERS:
        for leaf in leaf_datasets(cfg[loader].dataset):
            leaf.data_root = data_root
