"""Benchmark (a): a second evaluation with the cached reference statistics vs the first, same samples.

Reference: the 10,000 real MNIST test images (``lit_gen.data.MNIST``, split ``val``); samples: a fixed
``samples.pt`` of stand-in generated images; extractor: ``RandomConvFeatures``; all metrics with their
paper defaults (FD, KID 100x1000, PR k=3, DC k=5). Each repetition uses a fresh cache folder: the first
``python -m lit_gen evaluate`` call computes and caches the reference, the second reads it. Timings are
interleaved in one process (first, second, first, second, ...).

    python experiments/fid/bench_cache.py --reps 2 --num_fake 5000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import fake_images, load_average, write_mnist

from lit_gen.commands.evaluate import main as evaluate


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    evaluate([str(a) for a in args])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--num_fake", type=int, default=5000)
    parser.add_argument("--out", type=str, default=str(Path(__file__).with_name("results_cache.json")))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lit_gen_bench_cache_"))
    data_dir = write_mnist(tmp / "data")
    torch.save(fake_images(args.num_fake), tmp / "fake.pt")
    common = [
        "--images", tmp / "fake.pt",
        "--data", "lit_gen.data.MNIST", "--data.data_dir", data_dir, "--data.download", "false",
        "--data.num_workers", "0", "--split", "val",
        "--extractor", "lit_gen.metrics.RandomConvFeatures", "--progress", "false",
    ]  # fmt: skip
    timed([*common, "--reference_samples", "200", "--use_cache", "false", "--out", tmp / "warmup.json"])
    rows = []
    loads = [load_average()]
    for rep in range(args.reps):
        cache = tmp / f"cache{rep}"
        first = timed([*common, "--cache_dir", cache, "--out", tmp / f"first{rep}.json"])
        second = timed([*common, "--cache_dir", cache, "--out", tmp / f"second{rep}.json"])
        a = json.loads((tmp / f"first{rep}.json").read_text())
        b = json.loads((tmp / f"second{rep}.json").read_text())
        assert a["metrics"] == b["metrics"], (a["metrics"], b["metrics"])
        rows.append({"first_s": first, "second_s": second, "ratio": second / first})
        loads.append(load_average())
        print(
            f"rep {rep}: first {first:.1f} s, second {second:.1f} s, ratio {second / first:.3f}", flush=True
        )
    result = {
        "num_real": a["num_real"],
        "num_fake": a["num_fake"],
        "extractor": a["extractor"]["name"],
        "metrics": a["metrics"],
        "reps": rows,
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "load_average": loads,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
