"""Benchmark the data check of `seglab train`: first check (every file decoded) vs cached.

Prints figures, asserts nothing:
    .venv/bin/python scripts/bench_data_check.py [--train 1800] [--val 200] [--workers N]

Generates a VOC-layout dataset (``write_synth_dataset``: 128x160 JPEGs, palette
PNG masks; reused when ``--out`` already holds the same one), removes its cache,
then times ``run_doctor`` on the train and val sets of the VOC fragment twice: the
first check decodes every image and mask on ``--workers`` processes (default:
every core) and writes the cache; the second finds every file unchanged.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from seglab.data.synth import write_synth_dataset
from seglab.doctor import file_check
from seglab.doctor.dataset import config_for_target, run_doctor, specs_from_config


def timed_check(specs, workers: int | None) -> tuple[float, object]:
    start = time.perf_counter()
    result = run_doctor(specs, workers=workers, progress=None)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1800)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", help="dataset parent folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = write_synth_dataset("voc", Path(args.out or tmp), num_train=args.train,
                                   num_val=args.val, seed=0).root
        made = time.perf_counter() - start
        (root / file_check.CACHE_NAME).unlink(missing_ok=True)
        specs = specs_from_config(config_for_target(root, None))
        first_s, first = timed_check(specs, args.workers)
        cached_s, cached = timed_check(specs, args.workers)
        files = first.files_decoded
        workers = args.workers or file_check.cpu_workers()
        print(f"{args.train + args.val} image/mask pairs ({files} files, 128x160 VOC layout; "
              f"generated in {made:.1f} s), {workers} worker process(es)")
        print(f"first check  {first_s:6.2f} s  ({files / first_s:7.0f} files/s, "
              f"{first.files_decoded} decoded)")
        print(f"cached check {cached_s:6.2f} s  ({files / cached_s:7.0f} files/s, "
              f"{cached.files_decoded} decoded, {cached.files_cached} from the cache)")
        print(f"speed-up {first_s / cached_s:.1f}x; cache "
              f"{(root / file_check.CACHE_NAME).stat().st_size / 1024:.0f} KiB; same report: "
              f"{first.to_dict()['datasets'] == cached.to_dict()['datasets']}")


if __name__ == "__main__":
    main()
