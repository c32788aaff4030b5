"""1 vs 2 DDP processes on CPU (gloo) for the DCGAN quickstart and the character GPT, measured side by side.

    python experiments/scaling/run.py [--repeats 2] [--batches 40]      # from the repository root

For each model: one process with the config's batch B; two processes with B/2 each (same global batch:
strong scaling); two processes with B each (global 2B: weak scaling). Runs are interleaved (A, B, C, A, B,
C, ...) so that load changes hit all variants alike; the load average is recorded with every run. Every
process runs one intra-op thread. Prints a Markdown table and writes ``results.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"

MODELS = {
    # configs/gan.yaml: DCGAN, 32 px digits, batch 64; 2 optimizer steps per batch
    "dcgan": (["--config", "configs/gan.yaml"], "--data.init_args.batch_size", 64, 2),
    # nanoGPT's CPU character model (4 layers, 128 wide, context 64), batch 12
    "gpt": (
        ["--config", "configs/gpt_shakespeare_char_cpu.yaml", "--data.init_args.path", str(TEXT)],
        "--data.init_args.batch_size",
        12,
        1,
    ),
}


def one_run(model: str, processes: int, per_process_batch: int, batches: int, warmup: int) -> dict:
    args, batch_key, _, steps_per_batch = MODELS[model]
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "lit_gen", "fit", *args, "--run.root", tmp,
            "--trainer.accelerator", "cpu", "--trainer.devices", str(processes),
            "--trainer.strategy", "ddp" if processes > 1 else "auto",
            batch_key, str(per_process_batch),
            "--trainer.max_steps", str(batches * steps_per_batch),
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
            "--trainer.callbacks+=experiments.scaling.throughput.Throughput",
            "--trainer.callbacks.warmup", str(warmup),
            "--checkpoint.every_n_train_steps", "0", "--checkpoint.save_last", "false",
        ]  # fmt: skip
        # one thread per process: 1 process uses 1 core, 2 processes 2 (Lightning gives each DDP process
        # cores / processes threads anyway, and spinning intra-op threads collapse on a loaded machine)
        env = {k: v for k, v in os.environ.items() if k != "LIT_GEN_RUN_DIR"} | {"OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        (result,) = Path(tmp).glob("*/*/throughput.json")
        out = json.loads(result.read_text())
    out.update(model=model, per_process_batch=per_process_batch, load_average=os.getloadavg()[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    options = parser.parse_args()
    results = []
    for _ in range(options.repeats):
        for model in options.models:
            batch = MODELS[model][2]
            for processes, per_process in ((1, batch), (2, batch // 2), (2, batch)):
                result = one_run(model, processes, per_process, options.batches, options.warmup)
                results.append(result)
                print(json.dumps(result), flush=True)
    (Path(__file__).with_name("results.json")).write_text(json.dumps(results, indent=1))
    print("\n| model | processes x batch | global batch | samples/s (median) | vs 1 process | load avg |")
    print("|---|---|---|---|---|---|")
    for model in options.models:
        rows = [r for r in results if r["model"] == model]
        base = statistics.median(r["samples_per_sec"] for r in rows if r["processes"] == 1)
        for processes, per_process in sorted({(r["processes"], r["per_process_batch"]) for r in rows}):
            same = [r for r in rows if (r["processes"], r["per_process_batch"]) == (processes, per_process)]
            speed = statistics.median(r["samples_per_sec"] for r in same)
            load = statistics.mean(r["load_average"] for r in same)
            print(
                f"| {model} | {processes} x {per_process} | {processes * per_process} | {speed:.1f} | "
                f"{speed / base:.2f} | {load:.1f} |"
            )


if __name__ == "__main__":
    main()
