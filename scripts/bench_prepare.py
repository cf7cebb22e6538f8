"""Benchmark `seglab data prepare`: SBD conversion throughput and peak extra disk.

Prints figures, asserts nothing: `.venv/bin/python scripts/bench_prepare.py [N]`
(N training images at VOC's typical 375x500; SBD then holds ~2N masks).
"""

import sys
import tempfile
import threading
import time
from pathlib import Path

from seglab.data.prepare import STAGING, prepare_sbd, prepare_voc
from seglab.data.synth import write_archives


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def peak_staging(run, staging: Path) -> tuple[float, int]:
    """Run ``run()`` while sampling the staging folder's size; return (seconds, peak bytes)."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_bytes(staging))
            except FileNotFoundError:
                pass  # files renamed while listing
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, peak[0]


def main() -> None:
    num_train = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        archives = write_archives(tmp_path / "archives", num_train, num_train // 2, seed=0,
                                  size=(375, 500))
        for nproc in (1, 2):
            data = tmp_path / f"data{nproc}"
            voc_s, voc_peak = peak_staging(
                lambda d=data: prepare_voc(archives["voc"], d, skip_checksum=True),
                data / STAGING)
            seconds, sbd_peak = peak_staging(
                lambda d=data, n=nproc: prepare_sbd(archives["sbd"], d, skip_checksum=True,
                                                    nproc=n), data / STAGING)
            masks = len(list((data / "VOCdevkit/VOC2012/SegmentationClassAug").glob("*.png")))
            print(f"SBD prepare, {nproc} process(es): {masks} masks in {seconds:.2f} s = "
                  f"{masks / seconds:.0f} images/s (extraction + .mat->PNG + lists)")
        for kind, peak in (("voc", voc_peak), ("sbd", sbd_peak)):
            size = archives[kind].stat().st_size
            print(f"{kind}: archive {size / 1e6:.1f} MB, peak extra disk in staging "
                  f"{peak / 1e6:.1f} MB = {peak / size:.2f}x the archive")


if __name__ == "__main__":
    main()
