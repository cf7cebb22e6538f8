"""``seglab status WORK_DIR...``: where each training run stands, one row a run.

A run's ``RunStatusHook`` (every seglab training run has one) keeps
``WORK_DIR/run_status.json`` up to date: state, pid and host, iteration, speed, last
loss, checkpoint and mIoU. The CLI marks what no hook can see: a run that raised
(``failed``), one that checkpointed on a signal and requeued itself (``requeued``) or
stopped (``stopped``), with :func:`mark_run_state`. Reading it back, a ``running`` run
whose heartbeat is old and whose process is gone (``kill -9``, a node failure, an OOM
kill) is shown as ``lost``; a Slurm job's queue state is asked of ``squeue`` where
there is one. Work dirs without the file (older runs, stock mmseg) are read from what
mmengine leaves there: ``last_checkpoint``, ``iter_N``/``epoch_N.pth`` and
``*/vis_data/scalars.json``.

Importing this module needs no torch: ``seglab status`` answers in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seglab.atomic_files import atomic_write, folder_lock
from seglab.errors import UserError

STATUS_FILE = "run_status.json"
FORMAT = 1
# What the hook and the CLI write. The reading side adds "lost", "stalled" and "unknown".
STATES = ("not started", "running", "finished", "failed", "requeued", "stopped")
# A heartbeat is written at most every 30 s (RunStatusHook's interval_s), also during
# validation; a run silent for 10 minutes, or 20 of its own iterations when those are
# slower, has stopped writing.
MIN_SILENCE_S = 600.0
SILENT_ITERATIONS = 20
SQUEUE_TIMEOUT_S = 5.0
# Fields of the previous attempt that mean nothing once a resumed run starts again.
ATTEMPT_FIELDS = ("error", "ended", "sec_per_iter", "phase")
SLURM_FIELDS = ("slurm_job_id", "slurm_array_job_id", "slurm_array_task_id",
                "slurm_restart_count")
_CHECKPOINT_RE = re.compile(r"^(iter|epoch)_(\d+)\.pth$")
_ITER_LOG_RE = re.compile(r"Iter\(train\)\s*\[\s*(\d+)/(\d+)\]")
_EPOCH_LOG_RE = re.compile(r"Epoch\(train\)\s*\[\s*(\d+)\]\[\s*(\d+)/(\d+)\]")
_MAX_EPOCHS_RE = re.compile(r"^train_cfg = dict\((.*?)\)$", re.S | re.M)
_LOG_TAIL_BYTES = 64 * 1024


# ----------------------------------------------------------------------------------------
# Writing: the hook and the CLI


def status_path(work_dir: str | os.PathLike[str]) -> Path:
    """``WORK_DIR/run_status.json``."""
    return Path(work_dir) / STATUS_FILE


def read_status_file(work_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's status record, or None where there is none (or it cannot be read)."""
    try:
        with open(status_path(work_dir), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def update_status_file(work_dir: str | os.PathLike[str], fields: Mapping[str, Any],
                       fresh: bool = False, drop: Iterable[str] = ()) -> Path:
    """Merge ``fields`` into the run's status record, less the keys in ``drop``
    (``fresh``: replace the record), and write it whole. The read-modify-write holds the
    work dir's lock: the hook (rank 0) and the CLI marking a failure (any rank) may write
    at the same time. Raises ``OSError``."""
    path = status_path(work_dir)
    with folder_lock(path.parent):
        record = {} if fresh else (read_status_file(work_dir) or {})
        for key in drop:
            record.pop(key, None)
        record.update(fields)
        record["format"] = FORMAT
        record["updated"] = time.time()
        with atomic_write(path) as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
            handle.write("\n")
    return path


def first_line(error: BaseException | str) -> str:
    """``TypeName: first line`` of an exception (its message alone for a string), cut at
    300 characters: the table shows it, the log has the rest."""
    if isinstance(error, BaseException):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    else:
        text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return text if len(text) <= 300 else text[:297] + "..."


def started_here(record: Mapping[str, Any] | None) -> bool:
    """Whether ``record`` was started by this process's ``RunStatusHook`` (same host, pid
    and process start): the process that is training that run."""
    if not record or record.get("hostname") != socket.gethostname():
        return False
    pid = os.getpid()
    started = record.get("pid_start")
    return record.get("pid") == pid and (started is None or str(started) == process_start(pid))


def mark_run_state(work_dir: str | os.PathLike[str], state: str, *,
                   error: BaseException | str | None = None, own_record_only: bool = True,
                   **fields: Any) -> Path | None:
    """Record that the run in ``work_dir`` is now ``state``, keeping the record's other
    fields (pid, host, Slurm job, iteration, checkpoint, mIoU...).

    For what ``RunStatusHook`` cannot see: a run that raised (mmengine calls no hook
    then), a run that checkpointed on a signal and requeued itself or stopped. Safe in
    an ``except`` block: it never raises for a file it cannot write (it returns None)
    and never creates a work dir. By default it changes only a record this process's
    ``RunStatusHook`` started (:func:`started_here`), so a command refused before
    training began (a config typo, a work dir that holds another run, a failed data
    check) does not mark the run already there as failed, and of a job's ranks only
    rank 0 (the one that writes the record) marks it; every rank may call it.

    Args:
        work_dir (str | PathLike): the run's work dir (``cfg.work_dir``).
        state (str): one of ``'failed'``, ``'requeued'`` (checkpointed on a Slurm
            signal and put back in the queue), ``'stopped'`` (checkpointed on a signal,
            continue with ``--resume``), ``'finished'``, ``'running'``, ``'not started'``.
        error (BaseException | str, optional): what made the run fail; its type and first
            line are recorded as ``error`` (a second ``failed`` keeps the first error:
            the others are usually its consequences). Defaults to None.
        own_record_only (bool): leave a record started by another process (or a missing
            one) alone. False: mark it anyway, creating the record in an existing work
            dir. Defaults to True.
        **fields: more JSON-serialisable fields to record, e.g. ``iteration=1200`` (the
            last completed iteration) and ``checkpoint='.../iter_1200.pth'`` (recorded by
            file name, with ``checkpoint_time`` now unless given).

    Returns:
        Path | None: the status file written, or None where nothing was written.

    Example:
        >>> mark_run_state(cfg.work_dir, "failed", error=err)
        >>> mark_run_state(runner.work_dir, "requeued", iteration=1200,
        ...                checkpoint=f"{runner.work_dir}/iter_1200.pth")
    """
    if state not in STATES:
        raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")
    if not Path(work_dir).is_dir():
        return None
    previous = read_status_file(work_dir)
    if own_record_only and not started_here(previous):
        return None
    record: dict[str, Any] = {**fields, "state": state}
    if state != "running":
        record["ended"] = time.time()
    if fields.get("checkpoint"):
        record["checkpoint"] = os.path.basename(str(fields["checkpoint"]))
        record.setdefault("checkpoint_time", time.time())
    if state != "failed":
        record["error"] = None  # an earlier attempt's error is no longer the run's state
    elif error is not None and not (previous and previous.get("state") == "failed"
                                    and previous.get("error")):
        record["error"] = first_line(error)
    try:
        return update_status_file(work_dir, record)
    except OSError:
        return None


def slurm_fields(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Slurm job this process runs in, as the status record keeps it (empty outside)."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    if env.get("SLURM_JOB_ID"):
        out["slurm_job_id"] = env["SLURM_JOB_ID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        out["slurm_array_job_id"] = env["SLURM_ARRAY_JOB_ID"]
        out["slurm_array_task_id"] = env["SLURM_ARRAY_TASK_ID"]
    if env.get("SLURM_RESTART_COUNT", "").isdigit():
        out["slurm_restart_count"] = int(env["SLURM_RESTART_COUNT"])
    return out


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``): with the pid
    it names one process, so a pid the system has given to another process since does
    not pass for the run. None where ``/proc`` does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and ')'
    return fields[19] if len(fields) > 19 else None


# ----------------------------------------------------------------------------------------
# Reading: seglab status


@dataclass
class RunStatus:
    """One run as ``seglab status`` shows it.

    ``state`` is what the run recorded (or ``unknown`` without a status file, ``lost``,
    ``stalled``); ``display_state`` adds what the reader found out (the Slurm queue
    state, since when a lost run is silent).
    """

    work_dir: str
    state: str
    display_state: str
    source: str  # "run_status.json", "work dir" (no status file) or "none"
    iteration: int | None = None
    max_iters: int | None = None
    checkpoint: str | None = None
    checkpoint_age_s: float | None = None
    loss: float | None = None
    miou: float | None = None
    sec_per_iter: float | None = None
    eta_s: float | None = None
    heartbeat: float | None = None  # time.time() of the last write
    pid: int | None = None
    hostname: str | None = None
    slurm_job: str | None = None
    slurm_state: str | None = None
    restart_count: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def iters_per_s(self) -> float | None:
        return 1.0 / self.sec_per_iter if self.sec_per_iter else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "iters_per_s": self.iters_per_s}


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` looks like a training run's work dir (seglab's or mmengine's)."""
    if (path / STATUS_FILE).is_file() or (path / "last_checkpoint").is_file():
        return True
    with contextlib.suppress(OSError):
        if any(path.glob("*.pth")) or any(path.glob("*/vis_data")):
            return True
    return False


def find_runs(paths: Iterable[str | os.PathLike[str]], depth: int = 2) -> list[Path]:
    """The run work dirs ``paths`` name: a run itself, or a folder of runs (searched
    ``depth`` levels down, e.g. ``work_dirs`` -> ``zoo`` -> runs). A folder with no run
    in it is kept as it is (a run not started yet). Raises ``UserError`` for a path that
    is not a folder."""
    runs: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "no such folder"
            raise UserError(f"{path}: {what}. Fix: pass a run's work dir (the --work-dir "
                            "of `seglab train`) or a folder of them, e.g. work_dirs/zoo.")
        found = _runs_below(path, depth)
        runs += [p for p in (found or [path]) if p not in runs]
    return runs


def _runs_below(path: Path, depth: int) -> list[Path]:
    if is_run_dir(path):
        return [path]
    if depth <= 0:
        return []
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [run for child in children for run in _runs_below(child, depth - 1)]


def run_status(work_dir: str | os.PathLike[str], now: float | None = None) -> RunStatus:
    """Where the run in ``work_dir`` stands: its status file, checked against its process
    and Slurm's queue, with what the folder has for anything the file lacks."""
    path = Path(work_dir)
    now = time.time() if now is None else now
    record = read_status_file(path)
    folder = _FolderReader(path)
    if record is None:
        return _status_from_folder(path, folder, now)
    status = RunStatus(
        work_dir=str(path), state=str(record.get("state", "unknown")), display_state="",
        source=STATUS_FILE, iteration=_int(record.get("iteration")),
        max_iters=_int(record.get("max_iters")), loss=_float(record.get("loss")),
        miou=_float(record.get("miou")), sec_per_iter=_float(record.get("sec_per_iter")),
        heartbeat=_float(record.get("updated")), pid=_int(record.get("pid")),
        hostname=record.get("hostname"), slurm_job=_slurm_job(record),
        restart_count=_int(record.get("slurm_restart_count")), error=record.get("error"))
    # last_checkpoint is what --resume reads: it wins over the record, which may predate it
    name, age = folder.checkpoint(now)
    if name is None and record.get("checkpoint"):
        name = str(record["checkpoint"])
        when = _float(record.get("checkpoint_time"))
        age = now - when if when is not None else None
    status.checkpoint, status.checkpoint_age_s = name, age
    if status.miou is None or status.iteration is None:  # a hook added mid-run
        scalars = folder.scalars()
        status.miou = status.miou if status.miou is not None else scalars.miou
        status.iteration = status.iteration if status.iteration is not None else scalars.iteration
    _judge_liveness(status, record, now)
    return status


def _judge_liveness(status: RunStatus, record: Mapping[str, Any], now: float) -> None:
    """Fill display_state, slurm_state and eta_s: a "running" record is only as good as
    its heartbeat and its process."""
    state = status.state
    if state in ("running", "requeued", "not started") and status.slurm_job:
        status.slurm_state = slurm_job_state(status.slurm_job)
    slurm = status.slurm_state
    if state != "running":
        status.display_state = f"{state} ({slurm})" if slurm else state
        return
    silence = now - status.heartbeat if status.heartbeat is not None else float("inf")
    limit = max(MIN_SILENCE_S, SILENT_ITERATIONS * (status.sec_per_iter or 0.0))
    alive = _process_alive(status.pid, status.hostname, record.get("pid_start"))
    if alive is None and slurm == "RUNNING":
        alive = True  # another host's process; Slurm says its job still runs
    since = _clock(status.heartbeat)
    on_slurm = f"; slurm {slurm}" if slurm else ""
    if silence > limit and alive is not True:
        # the process is gone (or on another host, silent for too long): killed -9, the
        # node failed, the OOM killer; nothing marked the run failed
        status.state = "lost"
        status.display_state = f"lost (no heartbeat since {since}{on_slurm})"
        return
    if silence > limit:  # the process is there but writes nothing: hung (a collective?)
        status.state = "stalled"
        status.display_state = f"stalled (no heartbeat since {since}{on_slurm})"
        return
    details = ([f"slurm {slurm}"] if slurm else []) + (
        ["validating"] if record.get("phase") == "val" else [])
    status.display_state = "running" + (f" ({', '.join(details)})" if details else "")
    if status.sec_per_iter and status.iteration is not None and status.max_iters:
        remaining = (status.max_iters - status.iteration) * status.sec_per_iter
        status.eta_s = max(0.0, remaining - max(0.0, silence))


def _process_alive(pid: int | None, hostname: str | None, started: Any) -> bool | None:
    """True/False where this machine can tell (same host), None where it cannot."""
    if pid is None or hostname != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return None
    now_started = process_start(pid)
    if started is not None and now_started is not None and str(started) != now_started:
        return False  # the pid was given to another process since
    return True


def _slurm_job(record: Mapping[str, Any]) -> str | None:
    """The id squeue knows the job by: ``ARRAYJOB_TASK`` for an array task (stable across
    requeues), else ``SLURM_JOB_ID``."""
    if record.get("slurm_array_job_id") and record.get("slurm_array_task_id") is not None:
        return f"{record['slurm_array_job_id']}_{record['slurm_array_task_id']}"
    job = record.get("slurm_job_id")
    return str(job) if job else None


_squeue_timed_out_at = 0.0


def slurm_job_state(job: str, timeout: float = SQUEUE_TIMEOUT_S) -> str | None:
    """Slurm's state of ``job`` (``PENDING``, ``RUNNING``, ...) from ``squeue``; None
    without squeue, for a job it no longer knows, or on any failure. After a timeout
    (slurmctld not answering) the next minute's calls are skipped: a folder of 30 runs
    would otherwise wait 30 timeouts."""
    global _squeue_timed_out_at
    squeue = shutil.which("squeue")
    if squeue is None or time.monotonic() - _squeue_timed_out_at < 60.0:
        return None
    try:
        out = subprocess.run([squeue, "-h", "-j", job, "-o", "%T"], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        _squeue_timed_out_at = time.monotonic()
        return None
    except OSError:
        return None
    lines = out.stdout.split()
    return lines[0].strip() if out.returncode == 0 and lines else None


# ----------------------------------------------------------------------------------------
# Work dirs without a status file


@dataclass
class _Scalars:
    iteration: int | None = None
    loss: float | None = None
    miou: float | None = None
    sec_per_iter: float | None = None
    mtime: float | None = None


class _FolderReader:
    """What mmengine leaves in a work dir, read once and only when asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scalars: _Scalars | None = None

    def checkpoint(self, now: float) -> tuple[str | None, float | None]:
        """(file name, age in seconds) of the newest checkpoint: ``last_checkpoint``'s
        target, else the highest ``iter_N``/``epoch_N.pth``."""
        pointer = self.path / "last_checkpoint"
        target: Path | None = None
        with contextlib.suppress(OSError):
            text = pointer.read_text().strip()
            if text:
                target = self.path / os.path.basename(text)  # the run may have moved
        if target is None:
            numbered = [(int(m[2]), p) for p in self.path.glob("*.pth")
                        if (m := _CHECKPOINT_RE.match(p.name))]
            target = max(numbered)[1] if numbered else None
        if target is None:
            return None, None
        for candidate in (target, pointer):
            with contextlib.suppress(OSError):
                return target.name, now - candidate.stat().st_mtime
        return target.name, None

    def scalars(self) -> _Scalars:
        """The last training record (iteration, loss, time) and the last mIoU in
        ``*/vis_data/scalars.json``, every resume's folder in order."""
        if self._scalars is not None:
            return self._scalars
        out = _Scalars()
        for path in sorted(self.path.glob("*/vis_data/scalars.json")):
            try:
                lines = path.read_text(errors="replace").splitlines()
                out.mtime = path.stat().st_mtime
            except OSError:
                continue
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line being written
                if not isinstance(entry, dict):
                    continue
                if "loss" in entry and ("iter" in entry or "step" in entry):
                    # "iter": the global iteration (mmengine's LogProcessor, both loops)
                    out.iteration = _int(entry.get("iter", entry.get("step")))
                    out.loss = _float(entry["loss"])
                    out.sec_per_iter = _float(entry.get("time"))
                if "mIoU" in entry:
                    out.miou = _float(entry["mIoU"])
        self._scalars = out
        return out

    def max_iters(self) -> int | None:
        """The run's length from the end of its newest log: ``Iter(train) [N/M]`` for an
        iteration-based loop; ``Epoch(train) [e][i/n]`` times the dumped config's
        ``max_epochs`` for an epoch-based one."""
        logs = sorted(self.path.glob("*/*.log"))
        if not logs:
            return None
        try:
            with open(logs[-1], "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - _LOG_TAIL_BYTES))
                tail = handle.read().decode(errors="replace")
        except OSError:
            return None
        if found := _ITER_LOG_RE.findall(tail):
            return int(found[-1][1])
        per_epoch = _EPOCH_LOG_RE.findall(tail)
        if not per_epoch:
            return None
        for config in sorted(self.path.glob("*.py")):
            with contextlib.suppress(OSError):
                train_cfg = _MAX_EPOCHS_RE.search(config.read_text(errors="replace"))
                epochs = train_cfg and re.search(r"max_epochs\s*=\s*(\d+)", train_cfg[1])
                if epochs:
                    return int(epochs[1]) * int(per_epoch[-1][2])
        return None


def _status_from_folder(path: Path, folder: _FolderReader, now: float) -> RunStatus:
    name, age = folder.checkpoint(now)
    scalars = folder.scalars()
    started = name is not None or scalars.iteration is not None
    state = "unknown" if started else "not started"
    status = RunStatus(work_dir=str(path), state=state, display_state=state,
                       source="work dir" if started else "none", iteration=scalars.iteration,
                       checkpoint=name, checkpoint_age_s=age, loss=scalars.loss,
                       miou=scalars.miou, sec_per_iter=scalars.sec_per_iter,
                       heartbeat=scalars.mtime)
    if started:
        status.max_iters = folder.max_iters()
        status.notes.append(f"no {STATUS_FILE}: read from the checkpoints and logs")
    if status.iteration is None and name is not None and (m := _CHECKPOINT_RE.match(name)):
        if m[1] == "iter":
            status.iteration = int(m[2])
    return status


# ----------------------------------------------------------------------------------------
# The table


COLUMNS = ("run", "state", "iter", "checkpoint", "loss", "mIoU", "it/s", "ETA")


def duration(seconds: float | None) -> str:
    """``45s``, ``14m``, ``3h12m``, ``2d04h``: an age or ETA at a glance."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _clock(when: float | None) -> str:
    """``HH:MM`` today, ``Mon DD HH:MM`` before."""
    if when is None:
        return "?"
    local = time.localtime(when)
    if time.strftime("%Y%m%d", local) == time.strftime("%Y%m%d"):
        return time.strftime("%H:%M", local)
    return time.strftime("%b %d %H:%M", local)


def _row(status: RunStatus) -> list[str]:
    if status.iteration is None:
        iteration = "-"
    else:
        iteration = f"{status.iteration}/{status.max_iters}" if status.max_iters else str(
            status.iteration)
    checkpoint = "-"
    if status.checkpoint:
        checkpoint = status.checkpoint + (f" ({duration(status.checkpoint_age_s)} ago)"
                                          if status.checkpoint_age_s is not None else "")
    speed = status.iters_per_s
    return [status.work_dir, status.display_state, iteration, checkpoint,
            "-" if status.loss is None else f"{status.loss:.4f}",
            "-" if status.miou is None else f"{status.miou:.2f}",
            "-" if speed is None else f"{speed:.3g}",
            duration(status.eta_s)]


def status_table(statuses: list[RunStatus]) -> str:
    """One aligned row a run (the header first); a failed run's error on the line below."""
    rows = [list(COLUMNS), *(_row(s) for s in statuses)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                        strict=True)).rstrip())
        if i and statuses[i - 1].state == "failed" and statuses[i - 1].error:
            lines.append(f"  error: {statuses[i - 1].error}")
    return "\n".join(lines)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
