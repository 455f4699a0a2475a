"""How fast VQA-RAD samples load, cold and warm, and what the image cache costs in memory.

Measured in one process on the real VQA-RAD (``../shared/data/vqa_rad`` or ``--data-root``):

- manifest: parsing ``testset.json`` / ``trainset.json`` into samples;
- cold: ``dataset.load_image(sample)`` on a fresh dataset (decode + colour conversion);
- warm: the same calls again (served from the bounded cache);
- the obvious alternative: ``np.asarray(PIL.Image.open(path).convert("RGB"))`` on every call;
- cache memory: bytes held by the cache, and the process's resident-set growth.

Run: ``python benchmarks/data_load.py [--split test] [--limit N] [--cache-mb 512] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medvr_env.data.vqa_rad import VQARADDataset

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "vqa_rad"


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--cache-mb", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = parser.parse_args(argv)
    if not (Path(args.data_root) / "testset.json").is_file():
        print(f"VQA-RAD not found at {args.data_root}; pass --data-root (data_RAD layout)", file=sys.stderr)
        return 2

    start = time.perf_counter()
    ds = VQARADDataset(split=args.split, data_root=args.data_root, num_samples=args.limit,
                       cache_bytes=args.cache_mb * 2**20)
    manifest_ms = 1e3 * (time.perf_counter() - start)
    samples = list(ds)
    unique = {s.image_key: s for s in samples}
    rss_before = _rss_mb()
    cold = _timed(ds.load_image, unique.values())  # first touch of every image
    warm = _timed(ds.load_image, samples)  # every question, as an evaluation pass would
    rss_after = _rss_mb()
    pil = _timed(lambda s: np.asarray(Image.open(ds.path_of(s.image_key)).convert("RGB")), samples)

    per = lambda xs: 1e3 * statistics.mean(xs)  # noqa: E731
    med = lambda xs: 1e3 * statistics.median(xs)  # noqa: E731
    numbers = {
        "split": args.split, "questions": len(samples), "images": len(unique),
        "manifest_ms": manifest_ms,
        "cold_ms_mean": per(cold), "cold_ms_median": med(cold),
        "warm_ms_mean": per(warm), "warm_ms_median": med(warm),
        "pil_every_call_ms_mean": per(pil),
        "pass_seconds_cached": sum(cold) + sum(warm), "pass_seconds_pil": sum(pil),
        "cache_mb": ds.cache.nbytes / 2**20, "cache_images": len(ds.cache), "cache_budget_mb": args.cache_mb,
        "rss_growth_mb": rss_after - rss_before,
    }
    print(f"VQA-RAD {args.split}: {len(samples)} questions on {len(unique)} images; manifest parsed in "
          f"{manifest_ms:.1f} ms\n")
    rows = [
        ("cold load_image (decode, first touch)", numbers["cold_ms_mean"], numbers["cold_ms_median"]),
        ("warm load_image (cache hit)", numbers["warm_ms_mean"], numbers["warm_ms_median"]),
        ("PIL open + convert on every call", numbers["pil_every_call_ms_mean"], med(pil)),
    ]
    print(f"| {'per sample':<40} | {'mean ms':>9} | {'median ms':>9} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|")
    for name, mean, median in rows:
        print(f"| {name:<40} | {mean:>9.3f} | {median:>9.3f} |")
    ratio = numbers["pass_seconds_pil"] / max(numbers["pass_seconds_cached"], 1e-9)
    print(f"\none pass over every question: {numbers['pass_seconds_cached']:.2f} s with the cache vs "
          f"{numbers['pass_seconds_pil']:.2f} s re-decoding ({ratio:.1f}x)")
    print(f"cache: {numbers['cache_mb']:.1f} MiB for {numbers['cache_images']} images (budget {args.cache_mb} MiB); "
          f"process RSS grew {numbers['rss_growth_mb']:.1f} MiB")
    if args.json:
        print(json.dumps(numbers, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
