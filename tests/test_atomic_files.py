"""Shared files: written whole with a plain file's permissions, locked where the file
system can lock, and never a crash where it cannot."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from seglab.atomic_files import atomic_write, folder_lock


def test_a_written_file_gets_umask_permissions_not_mkstemps_0600(tmp_path) -> None:
    old = os.umask(0o002)  # a group-shared data root
    try:
        with atomic_write(tmp_path / "cache.json") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cache.json").stat().st_mode) == 0o664


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "epoch_1.pth"
    target.write_bytes(b"good")
    with pytest.raises(OSError), atomic_write(target, "wb") as f:
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_1.pth"]


def test_a_file_system_without_locks_runs_unlocked(tmp_path, monkeypatch) -> None:
    import fcntl

    from seglab.data.bad_samples import add_record, read_records

    def no_locks(fd, op):  # Lustre mounted noflock, some FUSE file systems
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with folder_lock(tmp_path) as held:
        assert held is False
    record = {"split": "train", "index": 3, "img_path": "a.jpg", "seg_map_path": "a.png",
              "reason": "truncated"}
    assert add_record(str(tmp_path / "bad_samples.json"), record) == (1, True)
    assert read_records(str(tmp_path / "bad_samples.json")) == [record]


@pytest.mark.slow
def test_a_held_lock_makes_the_next_process_wait_and_say_so(tmp_path) -> None:
    import multiprocessing

    waits = []
    ctx = multiprocessing.get_context("spawn")
    with folder_lock(tmp_path) as held:
        assert held
        child = ctx.Process(target=_lock_and_touch, args=(str(tmp_path),))
        child.start()
        child.join(timeout=2)
        assert child.is_alive()  # waiting for this process's lock
        waits.append(not (tmp_path / "child").exists())
    child.join(timeout=60)
    assert waits == [True] and (tmp_path / "child").exists()


def _lock_and_touch(folder: str) -> None:
    from pathlib import Path

    with folder_lock(folder, on_wait=lambda: print("waiting")):
        Path(folder, "child").touch()
