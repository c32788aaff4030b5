"""Benchmark: test NLL (importance sampling, k = 5,000) of the VAE and the IWAE (k = 50) on real MNIST digits.

Only the 10,000-image MNIST *test* set is available offline (``../shared/data/mnist``), so this splits it:
the first 9,000 images are the training set, the last 1,000 the test set (written in torchvision's
``MNIST/raw`` layout under a temporary folder, train files = first 9,000, t10k files = last 1,000). Both
models use the shipped configs (``configs/vae_mnist.yaml``, ``configs/iwae_mnist.yaml``: Burda et al.'s
networks, optimizer, batch size and LR schedule) with a wall-clock training budget instead of 3,280 epochs,
and are scored by ``python -m lit_gen test`` (test_k = 5,000). Results go to ``results.json``.

    python experiments/vae_nll/run.py --minutes 10 --threads 1                   # equal wall-clock budgets
    python experiments/vae_nll/run.py --models vae_mnist --max_batches 878 --minutes 60 --tag "@878 batches"
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
N_TRAIN = 9000


def idx_slice(data: bytes, start: int, stop: int) -> bytes:
    """An idx file holding items [start, stop) of ``data`` (an idx1/idx3 file)."""
    dims = data[3]
    header = bytearray(data[: 4 + 4 * dims])
    count = int.from_bytes(data[4:8], "big")
    item = (len(data) - len(header)) // count
    header[4:8] = (stop - start).to_bytes(4, "big")
    return bytes(header) + data[len(header) + start * item : len(header) + stop * item]


def write_split(data_dir: Path) -> None:
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        data = gzip.decompress((SHARED_MNIST / f"t10k-{name}.gz").read_bytes())
        count = int.from_bytes(data[4:8], "big")
        (raw / f"train-{name}").write_bytes(idx_slice(data, 0, N_TRAIN))
        (raw / f"t10k-{name}").write_bytes(idx_slice(data, N_TRAIN, count))


def lit_gen(args: list[str], env: dict, log: Path) -> str:
    with open(log, "a") as f:
        f.write(f"$ python -m lit_gen {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "lit_gen", *args],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
        )
        f.write(proc.stderr)
    if proc.returncode:
        raise SystemExit(f"lit_gen {args[0]} failed ({proc.returncode}); see {log}")
    return proc.stderr


def run_dir_of(stderr: str) -> Path:
    return Path(re.search(r"lit_gen: run directory (\S+)", stderr).group(1))


def last_metrics(csv_path: Path) -> dict[str, float]:
    """The last logged value of every column of a CSVLogger metrics file."""
    values: dict[str, float] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--models", nargs="+", default=["vae_mnist", "iwae_mnist"])
    parser.add_argument("--max_batches", type=int, default=None, help="stop after this many batches instead")
    parser.add_argument("--tag", type=str, default="", help="suffix of the result keys (e.g. '@878 batches')")
    parser.add_argument("--test_k", type=int, default=5000)
    parser.add_argument("--work", type=str, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="vae_nll-"))
    write_split(work / "data")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    minutes = int(args.minutes)
    seconds = int(round((args.minutes - minutes) * 60))
    common = [
        f"--data.data_dir={work / 'data'}",
        "--data.download=false",
        "--data.num_workers=0",
        "--checkpoint.every_n_epochs=1",
        f"--run.root={work / 'runs'}",
    ]
    results = {}
    for name in args.models:
        log = work / f"{name}.log"
        start = time.time()
        stderr = lit_gen(
            [
                "fit",
                f"--config=configs/{name}.yaml",
                *common,
                f"--trainer.max_time=00:00:{minutes:02d}:{seconds:02d}",
                f"--trainer.max_steps={args.max_batches or -1}",
                "--trainer.check_val_every_n_epoch=100000",
                "--trainer.enable_progress_bar=false",
            ],
            env,
            log,
        )
        train_s = time.time() - start
        fit_dir = run_dir_of(stderr)
        checkpoint = torch.load(fit_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        batches = int(checkpoint["global_step"])
        start = time.time()
        stderr = lit_gen(
            [
                "test",
                f"--config=configs/{name}.yaml",
                *common,
                f"--model.init_args.test_k={args.test_k}",
                "--model.init_args.chunk_size=1000",
                f"--ckpt_path={fit_dir / 'checkpoints' / 'last.ckpt'}",
                "--trainer.enable_progress_bar=false",
            ],
            env,
            log,
        )
        test = last_metrics(run_dir_of(stderr) / "csv" / "metrics.csv")
        results[name + args.tag] = {
            "batches": batches,
            "epochs": round(batches / (N_TRAIN // 20), 2),  # batch 20 in both configs
            "train_seconds": round(train_s, 1),
            "test_seconds": round(time.time() - start, 1),
            "test_images": 10000 - N_TRAIN,
            "test_k": args.test_k,
            **{k: round(v, 4) for k, v in test.items() if k.startswith("test/")},
        }
        print(name + args.tag, json.dumps(results[name + args.tag]), flush=True)
    path = HERE / "results.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}  # runs of other models are kept
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"wrote {HERE / 'results.json'} (scratch: {work})")


if __name__ == "__main__":
    main()
