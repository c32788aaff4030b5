"""How much the quickstart's in-training evaluation (``SampleQuality`` in ``configs/gan.yaml``) adds to it.

Runs ``configs/gan.yaml`` for ``--batches`` training batches with the evaluation every ``--batches / 2``
batches (fresh statistics cache, so the first evaluation includes computing the reference), all in one
process, and measures: the wall time of fit, the seconds of each evaluation (from ``eval/metrics.jsonl``),
and so the training seconds per batch. It then projects the quickstart's overhead: 2,000 batches with
evaluations at 500, 1,000, 1,500 and 2,000 (the first computing the reference) — first-eval + 3 x later-eval
over 2,000 x seconds-per-batch. Under one load both parts slow down alike, so the ratio is what matters.

    python experiments/fid/bench_quickstart.py --batches 100
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, load_average

from lit_gen.cli import main as lit_gen_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--out", type=str, default=str(Path(__file__).with_name("results_quickstart.json")))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lit_gen_bench_quickstart_"))
    os.environ["LIT_GEN_STATS_DIR"] = str(tmp / "stats")
    config = yaml.safe_load((ROOT / "configs" / "gan.yaml").read_text())
    config["trainer"]["max_steps"] = 2 * args.batches  # n_critic 1: one D and one G step per batch
    config["trainer"]["logger"] = False
    config["trainer"]["enable_progress_bar"] = False
    quality = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("SampleQuality"))
    quality["init_args"]["every_n_batches"] = args.batches // 2
    (tmp / "gan.yaml").write_text(yaml.safe_dump(config))
    loads = [load_average()]
    start = time.perf_counter()
    lit_gen_main(["fit", "--config", str(tmp / "gan.yaml"), "--run.root", str(tmp / "runs")])
    total = time.perf_counter() - start
    loads.append(load_average())
    (records_file,) = (tmp / "runs").glob("gan/*/eval/metrics.jsonl")
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    evals = [r["seconds"] for r in records]
    per_batch = (total - sum(evals)) / args.batches
    projected = (evals[0] + 3 * evals[-1]) / (2000 * per_batch)
    result = {
        "batches": args.batches,
        "fit_seconds": total,
        "eval_seconds": evals,
        "train_seconds_per_batch": per_batch,
        "num_fake": records[-1]["num_fake"],
        "num_real": records[-1]["num_real"],
        "metrics_last": records[-1]["metrics"],
        "projected_quickstart_overhead": projected,
        "load_average": loads,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
