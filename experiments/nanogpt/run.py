"""nanoGPT's Shakespeare-char CPU benchmark: a plain-PyTorch reference, lit_gen at equal settings, the speedrun.

For each seed, one after the other, each in a fresh process:

1. ``reference``: ``reference.py``, nanoGPT's ``train.py`` loop for its CPU quickstart in plain PyTorch (same
   network, nanoGPT's random stream);
2. ``cpu``: ``python -m lit_gen fit --config configs/gpt_shakespeare_char_cpu.yaml`` (the same settings);
3. ``speedrun``: ``python -m lit_gen fit --config configs/gpt_shakespeare_char_speedrun.yaml``.

The lit_gen runs get ``--seed_everything S --data.seed S``; the reference ``--seed S``. Per run:

- ``val_loss``: the last validation loss the run reported (nanoGPT's protocol: 20 batches of 12 windows; the
  reference draws them at random as nanoGPT does, lit_gen uses 20 fixed seeded batches);
- ``val_loss_full``: the loss on the whole validation split (non-overlapping windows; computed after the run,
  not timed) — much less noisy than 20 batches;
- ``wall_s``: wall time of the whole process (interpreter start to exit: imports, data, evaluations,
  checkpoints, loggers); ``cpu_s``: its CPU time (user + system, all its threads);
- ``peak_rss_gb``: the process's peak resident memory;
- the load average before and after (on a shared machine compare ratios, not absolute times).

and the wall-time ratios cpu / reference and speedrun / cpu (geometric means over the seeds).

    python experiments/nanogpt/run.py                          # seed 1337: reference, cpu, speedrun
    python experiments/nanogpt/run.py --seeds 1337 1 2         # three rounds
    python experiments/nanogpt/run.py --configs cpu speedrun   # without the reference
    python experiments/nanogpt/run.py --threads 1              # on a loaded machine
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "cpu": ROOT / "configs" / "gpt_shakespeare_char_cpu.yaml",
    "speedrun": ROOT / "configs" / "gpt_shakespeare_char_speedrun.yaml",
}
REFERENCE = Path(__file__).with_name("reference.py")
RUNS = ["reference", *CONFIGS]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


def read_metrics(run_dir: Path) -> tuple[list[tuple[int, float]], float | None]:
    """(step, val/loss) pairs logged by the run, and its mean training throughput (tokens/s)."""
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    vals = [(int(r["step"]) + 1, float(r["val/loss"])) for r in rows if r.get("val/loss")]
    speeds = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    return vals, (sum(speeds) / len(speeds) if speeds else None)


def full_validation_loss(ckpt: Path, data: Path) -> float:
    """Mean loss over the whole validation split in non-overlapping windows of the model's context."""
    from reference import full_split_loss  # this script's folder (sys.path[0])

    from lit_gen.checkpoints import load_model
    from lit_gen.data import Text

    model, _ = load_model(ckpt)
    datamodule = Text(str(data), block_size=model.network.block_size)
    datamodule.setup()
    return full_split_loss(model.network, datamodule.val_tokens, model.network.block_size)


def start(name: str, data: Path, root: Path, threads: int | None, seed: int, extra: list[str]) -> dict:
    """Starts one run in a fresh process (``fit`` for a config, ``reference.py`` for the reference);
    ``finish`` waits for it and collects its numbers."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    env.pop("LIT_GEN_RUN_DIR", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    run_dir = root / name / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    if name == "reference":
        cmd = [sys.executable, str(REFERENCE), "--data", str(data), "--seed", str(seed)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "lit_gen",
            "fit",
            "--config",
            str(CONFIGS[name]),
            "--data.path",
            str(data),
        ]
        cmd += ["--seed_everything", str(seed), "--data.seed", str(seed)]
        cmd += ["--run.dir", str(run_dir), "--trainer.enable_progress_bar", "false", *extra]
    load_before = os.getloadavg()
    log_path = root / f"{run_dir.name}-{name}.log"
    log = log_path.open("w")
    began = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    job = {
        "name": name,
        "log": log,
        "log_path": log_path,
        "began": began,
        "load": load_before,
        "run_dir": run_dir,
    }

    def wait() -> None:  # records the exit time and resources as soon as the process ends
        _, status, usage = os.wait4(process.pid, 0)
        job.update(ended=time.perf_counter(), status=status, usage=usage, load_end=os.getloadavg())

    job["waiter"] = threading.Thread(target=wait)
    job["waiter"].start()
    return job


def finish(job: dict, data: Path, threads: int | None, seed: int) -> dict:
    job["waiter"].join()
    status, usage, wall = job["status"], job["usage"], job["ended"] - job["began"]
    job["log"].close()
    name, run_dir, load_before = job["name"], job["run_dir"], job["load"]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed; see {job['log_path']}")
    if name == "reference":  # its last output line is its result; wall time and memory are measured here
        reported = json.loads(job["log_path"].read_text().strip().splitlines()[-1])
        vals = [(s, v) for s, v in reported["val_curve"] if s > 0]
        val_full, tokens_per_sec = reported["val_loss_full"], None
    else:
        vals, tokens_per_sec = read_metrics(run_dir)
        val_full = round(full_validation_loss(run_dir / "checkpoints" / "last.ckpt", data), 4)
    return {
        "config": name,
        "seed": seed,
        "steps": vals[-1][0],
        "val_loss": round(vals[-1][1], 4),
        "val_curve": [(s, round(v, 4)) for s, v in vals],
        "val_loss_full": val_full,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 3),
        "train_tokens_per_sec": round(tokens_per_sec, 1) if tokens_per_sec else None,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in job["load_end"]],
        "threads": threads or os.cpu_count(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def geometric_mean_ratio(results: list[dict], numerator: str, denominator: str) -> float | None:
    """Geometric mean over seeds of wall(numerator) / wall(denominator), pairing the runs of each seed."""
    walls = {(r["config"], r["seed"], r["repeat"]): r["wall_s"] for r in results}
    pairs = [(w, walls.get((denominator, s, k))) for (c, s, k), w in walls.items() if c == numerator]
    pairs = [(a, b) for a, b in pairs if b]
    return math.exp(sum(math.log(a / b) for a, b in pairs) / len(pairs)) if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Tiny Shakespeare (input.txt).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337], help="One round of runs per seed.")
    parser.add_argument("--repeats", type=int, default=1, help="Rounds per seed.")
    parser.add_argument("--configs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS (default: all cores).")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("results.jsonl"))
    parser.add_argument("--root", type=Path, default=None, help="Run directories (default: a temp folder).")
    parser.add_argument("extra", nargs="*", help="Extra CLI overrides for the lit_gen runs (after --).")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="nanogpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for repeat in range(args.repeats):
        for seed in args.seeds:
            for name in args.configs:  # one after the other: each run has the machine to itself
                job = start(name, args.data, root, args.threads, seed, args.extra)
                result = finish(job, args.data, args.threads, seed)
                result["repeat"] = repeat
                results.append(result)
                with args.results.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                print(json.dumps(result), flush=True)
    print(
        "\n| run | seed | steps | val loss (20 batches) | val loss (full split) | wall s | peak GB | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        load = f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}"
        print(
            f"| {r['config']} | {r['seed']} | {r['steps']} | {r['val_loss']:.4f} | {r['val_loss_full']:.4f} "
            f"| {r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} | {load} |"
        )
    print()
    for name in args.configs:
        rows = [r for r in results if r["config"] == name]
        mean = {key: sum(r[key] for r in rows) / len(rows) for key in ("val_loss", "val_loss_full", "wall_s")}
        print(
            f"{name}: mean over {len(rows)} runs: val {mean['val_loss']:.4f}, full split {mean['val_loss_full']:.4f}, "
            f"wall {mean['wall_s']:.1f} s"
        )
    for numerator, denominator in (("cpu", "reference"), ("speedrun", "cpu")):
        ratio = geometric_mean_ratio(results, numerator, denominator)
        if ratio is not None:
            print(f"wall-time ratio {numerator} / {denominator} (geometric mean over seeds): {ratio:.3f}")


if __name__ == "__main__":
    main()
