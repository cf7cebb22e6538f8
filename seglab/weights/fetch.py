"""``seglab weights fetch``: the pretrained weights mmseg's configs name, downloaded and checked.

mmseg's SegFormer configs start from ``mit_bN_20220624-<hash>.pth`` and its ResNet configs from
``open-mmlab://resnetNN_v1c``; mmengine downloads either on first use, which fails on a compute
node without internet, after the model is built. This fetches them ahead of time into a folder
(``checkpoints/`` by default): the names and URLs are read from the installed mmseg configs
and mmengine's ``hub/openmmlab.json`` (so they follow the pinned versions, not a copy here);
a cut transfer resumes from its ``.partial`` file with an HTTP ``Range`` request; the file
lands under its final name (``os.replace``) only after its SHA-256 matches the prefix in its
name (torch.hub's convention). Offline, the message says which URL to fetch by hand and where
to put it. ``--mirror`` (or ``SEGLAB_WEIGHTS_MIRROR``) points at a cluster's own copy.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import re
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from seglab.atomic_files import folder_lock
from seglab.errors import UserError

MIRROR_ENV = "SEGLAB_WEIGHTS_MIRROR"
DEFAULT_DIR = Path("checkpoints")
TIMEOUT_S = 30.0  # connect and each read: a stalled server fails instead of hanging a job
CHUNK = 1 << 20
PROGRESS_EVERY_S = 2.0  # a line every few seconds, not one per chunk (logs of batch jobs)
PARTIAL_SUFFIX = ".partial"
# torch.hub.HASH_REGEX: the hex digits after the last '-' are the head of the file's SHA-256
# (copied so that listing names or hinting does not import torch)
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
# ``checkpoint = 'https://.../mit_b2_20220624-66e8bf70.pth'`` in mmseg's segformer configs
_MIT_CHECKPOINT = re.compile(
    r"""^\s*checkpoint\s*=\s*['"](?P<url>[a-z]+://[^'"]*/(?P<stem>mit_b[0-5])_[^'"/]*\.pth)['"]""",
    re.MULTILINE)
RESNET_NAMES = ("resnet50_v1c", "resnet101_v1c")  # keys of mmengine's hub/openmmlab.json
OPEN_MMLAB = "open-mmlab://"
OPENMMLAB_HOST = "download.openmmlab.com"  # what a mirror (--mirror) holds a copy of
# A file name that is a release file of an entry, perhaps without date or hash
# (``mit_b2.pth``, ``resnet50_v1c-2cccc1ad.pth``), but not a derived one
# (``mit_b2_converted_from_hf.pth`` is ``seglab weights convert``'s)
_STEM_FILE = re.compile(r"^(?P<stem>mit[_-]b[0-5]|resnet(?:50|101)[_-]v1c)(?:_\d{8})?"
                        r"(?:-[0-9a-f]+)?\.pth$")

Progress = Callable[[str], None]


class _TransferStopped(Exception):
    """The network failed mid-body (its ``__cause__`` says how); the .partial is kept."""


@dataclass(frozen=True)
class WeightSource:
    """One downloadable checkpoint: its catalog name, where it is, what it must hash to."""

    name: str  # "mit-b2", "resnet50_v1c"
    url: str
    file_name: str  # the URL's last part, the name it gets in the folder
    sha256_prefix: str | None  # hex head of its SHA-256; None when the name carries none

    @classmethod
    def from_url(cls, name: str, url: str) -> WeightSource:
        file_name = urlsplit(url).path.rsplit("/", 1)[-1]
        found = HASH_REGEX.search(file_name)
        return cls(name, url, file_name, found.group(1) if found and found.group(1) else None)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def catalog() -> dict[str, WeightSource]:
    """The names ``fetch`` knows (``mit-b0`` ... ``mit-b5``, ``resnet50_v1c``,
    ``resnet101_v1c``), read from the installed mmseg configs and mmengine's model list."""
    return dict(_catalog())


@lru_cache(maxsize=1)
def _catalog() -> tuple[tuple[str, WeightSource], ...]:
    from mmengine.runner.checkpoint import get_external_models

    from seglab.config.walk import mmseg_config_dir

    found: dict[str, WeightSource] = {}
    # sorted: the same entry on every machine should two configs ever disagree
    for config in sorted((mmseg_config_dir() / "segformer").glob("*.py")):
        for match in _MIT_CHECKPOINT.finditer(config.read_text(encoding="utf-8")):
            name = match["stem"].replace("_", "-")
            found.setdefault(name, WeightSource.from_url(name, match["url"]))
    # get_external_models also reads ~/.cache/mmengine/open_mmlab.json, the user's overrides,
    # so this fetches what mmengine itself would load for open-mmlab://NAME
    external = get_external_models()
    for name in RESNET_NAMES:
        if name in external:
            found[name] = WeightSource.from_url(name, external[name])
    return tuple(sorted(found.items()))


def _key(name: str) -> str:
    """How a name is compared: case, ``open-mmlab://`` and ``_``/``-`` do not matter."""
    name = name.strip().lower()
    if name.startswith(OPEN_MMLAB):
        name = name[len(OPEN_MMLAB):]
    return name.replace("_", "-")


def resolve(name: str, sources: Mapping[str, WeightSource] | None = None) -> WeightSource:
    """The entry ``name`` means: a catalog name (``mit-b2``), an alias (``mit_b2``,
    ``open-mmlab://resnet50_v1c``), the release file name or its URL; any other http(s)
    URL is an entry of its own (named by the URL)."""
    sources = catalog() if sources is None else sources
    by_key: dict[str, WeightSource] = {}
    for source in sources.values():
        by_key[_key(source.name)] = source
        by_key[source.file_name.lower()] = source
    wanted = name.strip()
    url = "://" in wanted and not wanted.lower().startswith(OPEN_MMLAB)
    if url:  # a URL: its file name
        wanted = urlsplit(wanted).path.rsplit("/", 1)[-1]
    for key in (wanted.lower(), _key(wanted)):
        if key in by_key:
            return by_key[key]
    if url and urlsplit(name.strip()).scheme in ("http", "https") and wanted:
        # any other URL (a config's load_from, a paper's checkpoint): fetched as it is, with
        # no hash check, as mmengine did: "-12." in "epoch-12.pth" is no hash
        return WeightSource(name.strip(), name.strip(), wanted, None)
    known = sorted(source.name for source in sources.values())
    name_of = {_key(n): n for n in known}
    # best match first
    close_names = [name_of[k] for k in difflib.get_close_matches(_key(wanted), name_of, n=3)]
    raise UserError(
        f"unknown weights {name!r}. "
        + (f"Did you mean {' or '.join(repr(c) for c in close_names)}? " if close_names else "")
        + f"Known: {', '.join(known) if known else '(none: mmseg configs not found)'}.")


def mirror_url(url: str, mirror: str) -> str:
    """``url`` with its scheme and host replaced by ``mirror`` (which may carry a path):
    ``https://download.openmmlab.com/a/b.pth`` + ``http://m:8080/openmmlab`` ->
    ``http://m:8080/openmmlab/a/b.pth``."""
    if not urlsplit(mirror).scheme:
        raise UserError(f"mirror {mirror!r} is not a URL: give its scheme and host, e.g. "
                        "http://mirror.example:8080/openmmlab (the path of the file on "
                        "download.openmmlab.com is appended)")
    return mirror.rstrip("/") + urlsplit(url).path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _hash_ok(path: Path, source: WeightSource) -> bool:
    return source.sha256_prefix is None or sha256_of(path).startswith(source.sha256_prefix)


def fetch(name: str, dest_dir: str | os.PathLike[str] = DEFAULT_DIR, mirror: str | None = None,
          progress: Progress | None = _to_stderr,
          sources: Mapping[str, WeightSource] | None = None) -> Path:
    """Download the checkpoint ``name`` names into ``dest_dir``, check it, return its path.

    Args:
        name (str): a catalog name or alias (see ``resolve``).
        dest_dir (str | PathLike): the folder; created if missing. Defaults to ``checkpoints``.
        mirror (str, optional): replaces the URL's scheme and host; None reads
            ``SEGLAB_WEIGHTS_MIRROR``. Defaults to None.
        progress (callable, optional): gets the lines to show (stderr by default); None is
            quiet.
        sources (mapping, optional): the catalog to use instead of ``catalog()`` (tests, or a
            caller with its own entries). Defaults to None.
    """
    say = progress or (lambda message: None)
    source = resolve(name, sources)
    mirror = mirror if mirror is not None else (os.environ.get(MIRROR_ENV) or None)
    url = mirror_url(source.url, mirror) if mirror else source.url
    dest_dir = Path(dest_dir)
    final = dest_dir / source.file_name
    partial = dest_dir / (source.file_name + PARTIAL_SUFFIX)
    # Two ranks or two shells fetching into one folder would append to the same .partial
    with folder_lock(dest_dir, on_wait=lambda: say(
            f"another process is fetching into {dest_dir}; waiting for it")):
        if final.exists():
            return _check_existing(final, source, dest_dir, say)
        _download(source, url, partial, dest_dir, say)
        got = sha256_of(partial) if source.sha256_prefix else ""
        if not got.startswith(source.sha256_prefix or ""):
            got = got[:len(source.sha256_prefix or "")]
            partial.unlink()  # a rerun must start clean, not resume a wrong file
            raise UserError(
                f"{url}: the downloaded file's sha256 starts with {got}, expected "
                f"{source.sha256_prefix} (the hash in its name); nothing was kept. The server "
                "or a mirror sent a different file: check the mirror, or fetch it again later.")
        os.replace(partial, final)  # readers see no file or the whole checked one
    checked = "sha256 checked" if source.sha256_prefix else "no hash in its name to check"
    say(f"{source.name}: saved {final} ({checked})")
    return final


def _check_existing(final: Path, source: WeightSource, dest_dir: Path, say: Progress) -> Path:
    if source.sha256_prefix is None:
        say(f"{source.name}: {final} exists (its name has no hash to check); not downloaded")
        return final
    got = sha256_of(final)
    if got.startswith(source.sha256_prefix):
        say(f"{source.name}: {final} exists and its sha256 matches; not downloaded")
        return final
    # Never overwrite it: it may be the user's own file that happens to have this name
    raise UserError(
        f"{final} exists but its sha256 starts with {got[:len(source.sha256_prefix)]}, not "
        f"{source.sha256_prefix} as its name says: it is not {source.url}. Move it away "
        f"(seglab does not overwrite it), then run `{_command(source, dest_dir)}` again.")


def _command(source: WeightSource, dest_dir: Path) -> str:
    folder = str(dest_dir)
    # ~ stays unquoted so the shell still expands it
    home, rest = ("~/", folder[2:]) if folder.startswith("~/") else ("", folder)
    return f"seglab weights fetch {source.name} --dir {home}{shlex.quote(rest)}"


def _unreachable(source: WeightSource, url: str, partial: Path, dest_dir: Path,
                 why: str) -> UserError:
    """The one offline message: what to fetch by hand, where to put it, how to check it."""
    final = dest_dir / source.file_name
    kept = partial.stat().st_size if partial.exists() else 0
    return UserError(
        f"cannot download {url} ({why}). Fetch {source.url} by hand (e.g. on a machine with "
        f"internet: curl -L -o {shlex.quote(final.name)} {source.url}), put it at "
        f"{final.resolve()}, then `{_command(source, dest_dir)}` verifies it"
        + (f"; or run that command again where the URL is reachable: it resumes the {kept:,} "
           f"bytes kept in {partial}" if kept else "")
        + ".")


def _download(source: WeightSource, url: str, partial: Path, dest_dir: Path,
              say: Progress) -> None:
    """Bring ``partial`` to the whole file: resume it where the server allows, else restart.
    Returns when the server says it sent everything; the caller checks the hash."""
    for _ in range(2):  # a second round only after throwing away an unusable .partial
        offset = partial.stat().st_size if partial.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "seglab-weights-fetch"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as err:
            with err:
                if err.code == 416 and offset:
                    # Nothing after byte N: the .partial is complete (a run stopped before the
                    # rename) or longer than the file; its hash, or the size the server gives,
                    # says which
                    total = _range_total(err.headers.get("Content-Range"))
                    if (_hash_ok(partial, source) if source.sha256_prefix
                            else total == offset):
                        say(f"{source.name}: {partial} is already complete")
                        return
                    say(f"{source.name}: {partial} does not match the server's file; "
                        "starting over")
                    partial.unlink()
                    continue
                raise _unreachable(source, url, partial, dest_dir,
                                   f"HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            why = str(getattr(err, "reason", None) or err) or type(err).__name__
            raise _unreachable(source, url, partial, dest_dir, why) from err
        with response:
            status = getattr(response, "status", None)  # None for file:// mirrors
            start = _range_start(response.headers.get("Content-Range")) if status == 206 else 0
            if status == 206 and start != offset:  # a range we did not ask for: unusable
                say(f"{source.name}: the server resumed at byte {start}, not {offset}; "
                    "starting over")
                partial.unlink()
                continue
            if offset and status != 206:
                say(f"{source.name}: the server does not resume downloads; starting over")
                offset = 0
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            total = (_range_total(response.headers.get("Content-Range")) if status == 206
                     else expected)
            say(f"{source.name}: downloading {url} to {partial}"
                + (f" (resuming at {_mib(offset)})" if offset else ""))
            try:
                received = _stream(response, partial, offset, total, source, say)
            except _TransferStopped as err:
                raise _unreachable(source, url, partial, dest_dir,
                                   f"the transfer stopped: {err.__cause__}") from err.__cause__
            if expected is not None and received < expected:
                raise _unreachable(source, url, partial, dest_dir,
                                   f"the connection closed after {received:,} of "
                                   f"{expected:,} bytes")
            return
    raise _unreachable(source, url, partial, dest_dir,
                       "the server's answers to a resume request were unusable twice")


def _stream(response: http.client.HTTPResponse, partial: Path, offset: int, total: int | None,
            source: WeightSource, say: Progress) -> int:
    """Append the body to ``partial`` (from ``offset``); the bytes received. A network error
    mid-way raises ``_TransferStopped`` and keeps what arrived, for the next run to resume."""
    received = 0
    last = time.monotonic()
    with open(partial, "ab" if offset else "wb") as out:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as err:
                # the network, not the disk (a full disk raises from write, which the CLI
                # explains itself)
                raise _TransferStopped from err
            if not chunk:
                break
            out.write(chunk)  # a full disk raises here, an OSError the CLI explains
            received += len(chunk)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                say(f"{source.name}: {_mib(offset + received)}"
                    + (f" of {_mib(total)} ({(offset + received) / total:.0%})" if total else ""))
        out.flush()
        os.fsync(out.fileno())  # the rename that follows must not publish unwritten bytes
    return received


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2 ** 20:.1f} MiB"


def _range_start(content_range: str | None) -> int | None:
    found = re.match(r"bytes\s+(\d+)-", content_range or "")
    return int(found.group(1)) if found else None


def _range_total(content_range: str | None) -> int | None:
    """The whole file's size from ``bytes 0-9/100`` or ``bytes */100``."""
    found = re.search(r"/(\d+)\s*$", content_range or "")
    return int(found.group(1)) if found else None


def fetch_hint(path_or_url: str, sources: Mapping[str, WeightSource] | None = None) -> str | None:
    """The command that gets the checkpoint a config names, or None when no catalog entry
    is it: ``checkpoints/mit_b2_20220624-66e8bf70.pth`` -> ``seglab weights fetch mit-b2
    --dir checkpoints``; ``open-mmlab://resnet50_v1c`` or a download.openmmlab.com URL ->
    the same into ``checkpoints``. Matched by file name, or by its ``mit_bN`` /
    ``resnetNN_v1c`` stem (the file then lands under its release name)."""
    sources = catalog() if sources is None else sources
    text = path_or_url.strip()
    if text.lower().startswith(OPEN_MMLAB):
        wanted, folder = _key(text), DEFAULT_DIR
    elif "://" in text:
        wanted, folder = urlsplit(text).path.rsplit("/", 1)[-1], DEFAULT_DIR
    else:
        wanted, folder = Path(text).name, Path(text).parent
    for source in sources.values():
        if wanted.lower() == source.file_name.lower() or wanted == _key(source.name):
            return _command(source, folder)
    found = _STEM_FILE.match(wanted.lower())
    if found is None:
        return None
    stem = _key(found["stem"])
    for source in sources.values():
        if _key(source.name) == stem:
            return _command(source, folder)
    return None
