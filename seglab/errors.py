"""The one error path of the ``seglab`` command.

Bad input (a ``UserError``, or one of the framework's exceptions that can only come
from the user's input or machine: an unknown registry type, a missing file, a folder
that cannot be written, a full disk) is one short message with the fix and exit 2.
Anything else is a bug: the traceback, one line saying so and what to report, exit 1.
Ctrl-C is one line and exit 130.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import shutil
import sys
import traceback
from collections.abc import Mapping
from typing import Any

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

GIB = 1024 ** 3
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}

# mmengine's build_from_cfg / build_scheduler_from_cfg (0.10.7)
_NOT_REGISTERED = re.compile(
    r"^(?P<type>\S+) is not in the (?:(?P<scope>[\w.]+)::)?(?P<registry>[\w ]+?) registry\b")


class UserError(Exception):
    """Input seglab refuses; the message names the file, key or value and the fix."""


def gib(num_bytes: float) -> str:
    return f"{num_bytes / GIB:.2f} GiB"


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free space of the file system holding ``path`` (or its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def user_message(err: BaseException, cfg_options: Mapping[str, Any] | None = None) -> str | None:
    """The message with the fix for an exception caused by the user's input or machine;
    ``None`` for anything else (a bug). ``cfg_options``: the command's ``--cfg-options``,
    to say which of them set an unknown type."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
        found = _NOT_REGISTERED.match(err.args[0])
        return _unknown_type_message(found, cfg_options or {}) if found else None
    if isinstance(err, OSError):
        return _os_error_message(err)
    return None


def _unknown_type_message(found: re.Match[str], cfg_options: Mapping[str, Any]) -> str:
    name, scope, registry = found["type"], found["scope"], found["registry"]
    where = f"{scope}::{registry}" if scope else registry
    close = registered_names_like(name, registry)
    setters = [f"{key}={value}" for key, value in cfg_options.items() if value == name]
    return (f"unknown {registry} type {name!r}: it is not in the {where} registry"
            + (f" (set by --cfg-options {', '.join(setters)})" if setters else "") + ". "
            + (f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else "")
            + "Fix: correct the type name in the config or --cfg-options; for a type of your "
            "own, add the module that registers it to custom_imports.")


def registered_names_like(name: str, registry_name: str, limit: int = 3) -> list[str]:
    """Registered names close to ``name`` in every scope of the registry called
    ``registry_name`` (mmengine's root one and its children: mmseg, mmpretrain, ...)."""
    from mmengine.registry import Registry, root

    def walk(registry: Registry) -> list[str]:
        names = list(registry.module_dict)
        for child in registry.children.values():
            names += walk(child)
        return names

    names = [n for value in vars(root).values()
             if isinstance(value, Registry) and value.name == registry_name
             for n in walk(value)]
    by_lower = {n.lower(): n for n in names}
    return [by_lower[n] for n in difflib.get_close_matches(name.lower(), by_lower, n=limit,
                                                           cutoff=0.6)]


def _os_error_message(err: OSError) -> str | None:
    path = err.filename if err.filename is not None else None
    text = _original_message(err)
    if isinstance(err, FileNotFoundError):
        if path is None and not text:
            return None
        what = f"{path}: no such file or directory" if path is not None else text.rstrip(".")
        return (f"{what}. Fix: check the path on the command line, in the config "
                "(data_root, ann_file, load_from, init_cfg checkpoint) or --cfg-options.")
    if isinstance(err, PermissionError):
        what = f"{path}: permission denied" if path is not None else text or "permission denied"
        return (f"{what}. Fix: pass --work-dir (or --out) a folder you can write to, or "
                "make that path readable/writable for your user.")
    if err.errno in DISK_FULL:
        free = free_bytes(path) if path is not None else None
        return (f"no space left on device{f' writing {path}' if path is not None else ''}"
                + (f" ({gib(free)} free)" if free is not None else "") + ". Fix: free space "
                "there, pass --work-dir on a bigger disk, or keep fewer checkpoints "
                "(--cfg-options default_hooks.checkpoint.max_keep_ckpts=N).")
    if err.errno == errno.ELOOP:
        return (f"{path or text}: too many levels of symbolic links (a link that points to "
                "itself or to a folder above it). Fix: delete that link, or point it at the "
                "real file or a folder outside the one being read (ls -l shows where it "
                "points).")
    if err.errno == errno.EROFS:
        return (f"{path or 'the target'}: read-only file system. Fix: pass --work-dir "
                "(or --out) a folder on a writable disk.")
    return None


def _original_message(err: BaseException) -> str:
    """The exception's own line; for one re-raised from a DataLoader worker, the last line of
    the worker's traceback that torch put into the message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return ""
    if any(line.startswith("Original Traceback") for line in lines):
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


def rank_prefix() -> str:
    """``[rank N] `` inside a multi-process job (every rank runs ``main``), else nothing."""
    from seglab.launch.env import in_multi_process_job, launch_rank

    return f"[rank {launch_rank()}] " if in_multi_process_job() else ""


def report_error(err: BaseException, command_line: str,
                 cfg_options: Mapping[str, Any] | None = None) -> int:
    """Print ``err`` the way the CLI does and return the exit status."""
    message = user_message(err, cfg_options)
    if message is not None:
        print(f"{rank_prefix()}seglab: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    traceback.print_exception(err, file=sys.stderr)
    print(f"{rank_prefix()}seglab: this is a bug in seglab or an unexpected error from "
          "mmengine/mmseg/torch, not a mistake in your input: please report it to the seglab "
          f"maintainers with the command ({command_line}), the traceback above and the output "
          "of `python -m pip list`.", file=sys.stderr)
    return EXIT_BUG


def report_interrupt(resumable: bool) -> int:
    print(f"{rank_prefix()}seglab: interrupted"
          + ("; resume with the same command plus --resume" if resumable else ""),
          file=sys.stderr)
    return EXIT_INTERRUPTED
