"""nanoGPT's Shakespeare-char CPU benchmark, run through lit_gen: the equal-settings config and the speedrun.

Runs ``python -m lit_gen fit`` for ``configs/gpt_shakespeare_char_cpu.yaml`` (nanoGPT's CPU quickstart,
exactly) and ``configs/gpt_shakespeare_char_speedrun.yaml`` side by side (interleaved when repeated), each in
a fresh process, and reports per run:

- ``val_loss``: the validation loss the run logged last (nanoGPT's protocol: 20 batches of 12 windows);
- ``val_loss_full``: the loss on the whole validation split (non-overlapping windows; computed afterwards from
  ``last.ckpt``, not timed) — less noisy than 20 random batches;
- ``wall_s``: wall time of the whole ``fit`` process (interpreter start to exit, evaluations included);
- ``peak_rss_gb``: the process's peak resident memory;
- the load average before and after (the machine may be shared: compare the ratio, not absolute times).

nanoGPT reports val loss 1.88 for the quickstart; on this machine type (quiet) it measured 1.8857 in 90 s
wall and 0.86 GB peak memory.

    python experiments/nanogpt/run.py                      # both configs once
    python experiments/nanogpt/run.py --repeats 2          # cpu, speedrun, cpu, speedrun
    python experiments/nanogpt/run.py --threads 1          # on a loaded machine
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


def read_metrics(run_dir: Path) -> tuple[list[tuple[int, float]], float | None]:
    """(step, val/loss) pairs logged by the run, and its mean training throughput (tokens/s)."""
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    vals = [(int(r["step"]) + 1, float(r["val/loss"])) for r in rows if r.get("val/loss")]
    speeds = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    return vals, (sum(speeds) / len(speeds) if speeds else None)


def full_validation_loss(ckpt: Path, data: Path) -> float:
    """Mean loss over the whole validation split in non-overlapping windows of the model's context."""
    import torch
    import torch.nn.functional as F

    from lit_gen.checkpoints import load_model
    from lit_gen.data import Text

    model, _ = load_model(ckpt)
    block = model.network.block_size
    datamodule = Text(str(data), block_size=block)
    datamodule.setup()
    tokens = torch.from_numpy(datamodule.val_tokens.astype("int64"))
    n = (len(tokens) - 1) // block
    x, y = tokens[: n * block].view(n, block), tokens[1 : n * block + 1].view(n, block)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 64):
            logits = model.network(x[i : i + 64])
            total += F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y[i : i + 64].reshape(-1), reduction="sum"
            )
    return float(total) / (n * block)


def start(name: str, data: Path, root: Path, threads: int | None, extra: list[str]) -> dict:
    """Starts one ``fit`` process; ``finish`` waits for it and collects its numbers."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    env.pop("LIT_GEN_RUN_DIR", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    run_dir = root / name / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    cmd = [sys.executable, "-m", "lit_gen", "fit", "--config", str(CONFIGS[name]), "--data.path", str(data)]
    cmd += ["--run.dir", str(run_dir), "--trainer.enable_progress_bar", "false", *extra]
    load_before = os.getloadavg()
    log = (root / f"{run_dir.name}-{name}.log").open("w")
    began = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    job = {"name": name, "log": log, "began": began, "load": load_before, "run_dir": run_dir}

    def wait() -> None:  # records the exit time and resources as soon as the process ends
        _, status, usage = os.wait4(process.pid, 0)
        job.update(ended=time.perf_counter(), status=status, usage=usage, load_end=os.getloadavg())

    job["waiter"] = threading.Thread(target=wait)
    job["waiter"].start()
    return job


def finish(job: dict, data: Path, threads: int | None) -> dict:
    job["waiter"].join()
    status, usage, wall = job["status"], job["usage"], job["ended"] - job["began"]
    job["log"].close()
    name, run_dir, load_before = job["name"], job["run_dir"], job["load"]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed; see {job['log'].name}")
    vals, tokens_per_sec = read_metrics(run_dir)
    return {
        "config": name,
        "steps": vals[-1][0],
        "val_loss": round(vals[-1][1], 4),
        "val_curve": [(s, round(v, 4)) for s, v in vals],
        "val_loss_full": round(full_validation_loss(run_dir / "checkpoints" / "last.ckpt", data), 4),
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 3),
        "train_tokens_per_sec": round(tokens_per_sec, 1) if tokens_per_sec else None,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in job["load_end"]],
        "threads": threads or os.cpu_count(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Tiny Shakespeare (input.txt).")
    parser.add_argument("--repeats", type=int, default=1, help="Interleaved repeats of both configs.")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS (default: all cores).")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="Run the configs of a repeat at the same time (same load on a shared machine; use --threads 1).",
    )
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("results.jsonl"))
    parser.add_argument("--root", type=Path, default=None, help="Run directories (default: a temp folder).")
    parser.add_argument("extra", nargs="*", help="Extra CLI overrides for every run (after --).")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="nanogpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for repeat in range(args.repeats):
        jobs = []
        for name in args.configs:
            jobs.append(start(name, args.data, root, args.threads, args.extra))
            if not args.parallel:
                jobs[-1] = finish(jobs[-1], args.data, args.threads)
        for job in jobs:
            result = job if "config" in job else finish(job, args.data, args.threads)
            result.update(repeat=repeat, parallel=args.parallel)
            results.append(result)
            with args.results.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
    print(
        "\n| config | steps | val loss (20 batches) | val loss (full split) | wall s | peak GB | load avg |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        load = f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}"
        print(
            f"| {r['config']} | {r['steps']} | {r['val_loss']:.4f} | {r['val_loss_full']:.4f} | {r['wall_s']:.1f} "
            f"| {r['peak_rss_gb']:.2f} | {load} |"
        )
    walls = {name: [r["wall_s"] for r in results if r["config"] == name] for name in args.configs}
    if all(walls.get(n) for n in ("cpu", "speedrun")):
        ratio = math.exp(
            sum(math.log(s / c) for s, c in zip(walls["speedrun"], walls["cpu"])) / len(walls["cpu"])
        )
        print(
            f"\nwall-time ratio speedrun / cpu (geometric mean over {len(walls['cpu'])} pairs): {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
