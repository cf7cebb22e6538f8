"""Decode every image and mask a dataset lists: once, on all cores, cached per file.

What one file holds (decodes or not, and why; its size; a mask's mode and label
histogram) depends on its bytes only, so each file's facts are cached, keyed by
its path, size and modification time, in ``<data root>/.seglab-data-check.json``
(written atomically; where the data root is not writable,
``~/.cache/seglab/data-check/<hash of the root>.json``). A second check of
unchanged data only stats the files. Per-dataset figures (class counts, label
range against a config's classes) are recomputed from these facts each time, so
one cache serves every config that reads the data.

Decoding is strict, as a training epoch is not: PIL's ``load()`` with truncated
images refused, whatever a process set ``ImageFile.LOAD_TRUNCATED_IMAGES`` to.
Any file content becomes facts, never an exception. Facts are what mmseg's loaders
get: an image's size after the EXIF orientation OpenCV applies, a mask's labels
after the cast to 8 bits. Processes that check the same data root at once (the
ranks of a torchrun job, two runs) read the cache and stat their files without
waiting; only one with files to decode takes its turn (``flock`` on the cache's
folder) and reads the cache again first, so the first decodes and the others
then find its results. The cache file is readable by whoever the umask lets
read the data (a group-shared data root).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from seglab.atomic_files import atomic_write, folder_lock

CACHE_NAME = ".seglab-data-check.json"
# Bump when what ``examine_file`` records changes: older caches are then ignored.
CACHE_VERSION = 2
# Single-channel modes mmseg reads as class indices (LoadAnnotations: PIL, 'unchanged',
# then ``.astype(np.uint8)``): 8-bit, 1-bit (0/1), and 16/32-bit (values wrap above 255).
MASK_MODES = ("P", "L", "1", "I;16", "I;16L", "I;16B", "I;16N", "I")
EXIF_ORIENTATION = 0x0112
# Formats whose EXIF orientation OpenCV applies as mmseg's LoadImageFromFile decodes them
# (cv2, color_type 'color'): it leaves WebP's alone, and PIL already turns a TIFF itself.
# Masks are read 'unchanged', which ignores the orientation.
ORIENTED_FORMATS = ("JPEG", "MPO", "PNG")
PARALLEL_FROM = 256  # fewer files to decode: one process (a pool costs ~1 s to start)
PROGRESS_EVERY_S = 5.0

Facts = dict[str, Any]
_Entry = tuple[Path, str, str, list[int]]  # a file to look up: path, kind, cache key, stat
Progress = Callable[[str], None]


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _strict_pil() -> Iterator[None]:
    """Truncated files refused, no pixel limit (mmseg's cv2 reader has none)."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = saved


def _turned_size(image: Image.Image, facts: Facts) -> None:
    """An image's size as mmseg decodes it: width and height swapped where OpenCV applies
    an EXIF orientation of a quarter turn (5-8); ``"orientation"`` records it."""
    if image.format not in ORIENTED_FORMATS:
        return
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001  unreadable EXIF: OpenCV ignores it too
        return
    if orientation in (5, 6, 7, 8):
        facts["size"] = facts["size"][::-1]
        facts["orientation"] = orientation


def _label_facts(pixels: np.ndarray) -> Facts:
    """The label histogram of a single-channel mask as mmseg gets it: cast to uint8, so a
    16/32-bit value outside 0..255 wraps around (256 reads as 0); those raw values (the
    first 10) are ``"wrapped"``."""
    facts: Facts = {}
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize > 1:
        outside = (pixels < 0) | (pixels > 255)
        if outside.any():
            facts["wrapped"] = np.unique(pixels[outside])[:10].tolist()
    counts = np.bincount(pixels.astype(np.uint8).ravel(), minlength=256)
    facts["hist"] = {str(v): int(counts[v]) for v in np.flatnonzero(counts)}
    return facts


def examine_file(path: str, kind: str) -> Facts:
    """Decode one file fully; ``kind`` ``"mask"`` adds its mode's label histogram.

    Returns ``{"size": [w, h], "mode": ...}`` (an image turned by its EXIF orientation
    also ``"orientation"``; masks in a ``MASK_MODES`` mode also ``"hist": {value:
    pixels}``, and ``"wrapped"`` where 8 bits do not hold them), or ``{"error": why}``;
    ``"transient": True`` marks an error of access, not content, which is not cached.
    Call it under ``_strict_pil``.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return {"error": f"cannot be read ({err.strerror or err})", "transient": True}
    if not data:
        return {"error": "is empty (0 bytes: an interrupted copy or download?)"}
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            facts: Facts = {"size": list(image.size), "mode": image.mode}
            if kind == "image":
                _turned_size(image, facts)
            elif image.mode in MASK_MODES:
                facts.update(_label_facts(np.asarray(image)))
    except Exception as err:  # noqa: BLE001  any content is a finding, never a traceback
        return {"error": f"cannot be decoded ({type(err).__name__}: {err})"}
    return facts


def _examine_chunk(chunk: list[tuple[str, str]]) -> list[Facts]:
    """A pool worker's share: ``(path, kind)`` pairs, facts in the same order."""
    with _strict_pil():
        return [examine_file(path, kind) for path, kind in chunk]


def _stat(path: Path) -> tuple[list[int] | None, Facts | None]:
    """``([size, mtime_ns], None)``, or ``(None, facts)`` when it cannot be stat'ed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, {"missing": True}
    except OSError as err:
        return None, {"error": f"cannot be read ({err.strerror or err})", "transient": True}
    return [st.st_size, st.st_mtime_ns], None


def cpu_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def cache_path(root: Path) -> Path:
    """``root/.seglab-data-check.json``, or the user's cache when ``root`` is read-only."""
    if _writable(root):
        return root / CACHE_NAME
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return base / "seglab" / "data-check" / f"{digest}.json"


def _load_cache(path: Path) -> dict[str, Facts]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("version") != CACHE_VERSION:
        return {}
    return saved.get("files", {})


def _save_cache(path: Path, files: dict[str, Facts]) -> bool:
    """Write the cache whole, readable as the umask allows; False if it cannot be written
    (no room, no permission): the next check decodes again."""
    try:
        with atomic_write(path) as out:
            json.dump({"version": CACHE_VERSION, "files": files}, out, separators=(",", ":"))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _turn(folder: Path, progress: Progress | None) -> Iterator[None]:
    """Exclusive use of ``folder``'s cache among processes: ranks of one job wait for the
    first one's cache instead of all decoding at once (where the file system can lock)."""
    def say_waiting() -> None:
        if progress:
            progress(f"data check: waiting for another seglab process checking {folder}")

    with folder_lock(folder, on_wait=say_waiting):
        yield


class _Ticker:
    """Progress lines every 10% of the files or every 5 s, whichever comes first."""

    def __init__(self, progress: Progress | None, done: int, total: int) -> None:
        self.progress, self.done, self.total = progress, done, total
        self.step = max(1, total // 10)
        self.next_mark = (done // self.step + 1) * self.step
        self.last = time.perf_counter()

    def advance(self, files: int) -> None:
        self.done += files
        now = time.perf_counter()
        if self.progress and self.done < self.total and (
                self.done >= self.next_mark or now - self.last >= PROGRESS_EVERY_S):
            self.progress(f"data check: {self.done:,}/{self.total:,} files")
            self.last, self.next_mark = now, (self.done // self.step + 1) * self.step


class FileCheck:
    """Facts for every file asked, and how many were decoded and how many came from the cache."""

    def __init__(self) -> None:
        self.facts: dict[Path, Facts] = {}
        self.examined = 0
        self.cached = 0

    def run(self, root: Path, files: list[tuple[Path, str]], *, use_cache: bool = True,
            workers: int | None = None, progress: Progress | None = stderr_progress,
            quiet: bool = False) -> None:
        """Add the facts of ``files`` (``(path, "image" | "mask")``), cached under ``root``.

        ``progress`` gets a line as a decode starts and one as it ends; unless ``quiet``
        (the ranks after the first of a job) also one every 10% or 5 s of a long decode,
        one while waiting for another process's turn, and the closing line of a check
        that decoded nothing.
        """
        files = [(p, k) for p, k in dict.fromkeys(files) if p not in self.facts]
        if not files:
            return
        start = time.perf_counter()
        cache_file = cache_path(root) if use_cache else None
        todo = self._take_cached(self._stat_all(root, files),
                                 _load_cache(cache_file) if cache_file else {})
        saved = False
        if todo:
            with (_turn(cache_file.parent, None if quiet else progress)
                  if cache_file and root.is_dir() else contextlib.nullcontext()):
                # the cache again, under the lock: another process may have just decoded them
                cache = _load_cache(cache_file) if cache_file else {}
                todo = self._take_cached(todo, cache)
                if todo:
                    self._decode(root, len(files), todo, cache, workers, progress, quiet)
                    saved = cache_file is not None and _save_cache(cache_file, cache)
        if progress and (todo or not quiet):
            note = f"; cached in {cache_file}" if saved else ""
            progress(f"data check: {len(files):,}/{len(files):,} files in "
                     f"{time.perf_counter() - start:.1f} s{note}")

    def _stat_all(self, root: Path, files: list[tuple[Path, str]]) -> list[_Entry]:
        """``(path, kind, cache key, stat)`` of each file that can be stat'ed; the facts of
        the others (missing, no access) are recorded now."""
        entries = []
        for path, kind in files:
            stat, facts = _stat(path)
            if facts is not None:
                self.facts[path] = facts
            else:
                entries.append((path, kind, os.path.relpath(path, root), stat))
        return entries

    def _take_cached(self, entries: list[_Entry], cache: dict[str, Facts]) -> list[_Entry]:
        """Record the facts ``cache`` holds for unchanged files; the entries left to decode."""
        todo = []
        for entry in entries:
            path, kind, key, stat = entry
            hit = cache.get(key)
            if hit is not None and hit.get("stat") == stat and hit.get("kind") == kind:
                self.facts[path] = hit
                self.cached += 1
            else:
                todo.append(entry)
        return todo

    def _decode(self, root: Path, total: int, todo: list[_Entry], cache: dict[str, Facts],
                workers: int | None, progress: Progress | None, quiet: bool) -> None:
        """Decode ``todo`` (of ``total`` files asked), adding the facts to ``cache``."""
        workers = min(workers or cpu_workers(), len(todo))
        # a daemon process (a multiprocessing.Pool worker) may not start a pool
        parallel = (len(todo) >= PARALLEL_FROM and workers > 1
                    and not multiprocessing.current_process().daemon)
        if progress:
            progress(f"data check: {total:,} files under {root}, "
                     f"{total - len(todo):,} unchanged since the last check; decoding "
                     f"{len(todo):,} on {workers if parallel else 1} process(es)")
        jobs = [(str(path), kind) for path, kind, _, _ in todo]
        ticker = _Ticker(progress if len(todo) >= PARALLEL_FROM and not quiet else None,
                         total - len(todo), total)
        results = _decode_parallel(jobs, workers, ticker) if parallel else \
            _decode_here(jobs, ticker)
        for (path, kind, key, stat), facts in zip(todo, results, strict=True):
            facts = {"stat": stat, "kind": kind, **facts}
            self.facts[path] = facts
            if not facts.get("transient"):
                cache[key] = facts
        self.examined += len(todo)


def _decode_here(jobs: list[tuple[str, str]], ticker: _Ticker) -> list[Facts]:
    results: list[Facts] = []
    with _strict_pil():
        for path, kind in jobs:
            results.append(examine_file(path, kind))
            ticker.advance(1)
    return results


def _decode_parallel(jobs: list[tuple[str, str]], workers: int, ticker: _Ticker) -> list[Facts]:
    """Facts for ``jobs`` in their order, from a pool of ``workers`` processes over chunks.

    Spawned, not forked: the caller may hold threads (torch) or a CUDA context.
    """
    # ~8 chunks a worker: the pool stays busy to the end and progress moves often
    size = max(8, min(512, len(jobs) // (workers * 8)))
    chunks = {i: jobs[i:i + size] for i in range(0, len(jobs), size)}
    out: list[Facts] = [{}] * len(jobs)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_examine_chunk, chunk): i for i, chunk in chunks.items()}
        for future in as_completed(futures):
            i = futures[future]
            out[i:i + len(chunks[i])] = future.result()
            ticker.advance(len(chunks[i]))
    return out
