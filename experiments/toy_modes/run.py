"""Mode-collapse benchmark: trains ``configs/toy_ring.yaml`` and ``configs/toy_grid.yaml`` over several seeds
through lit_gen's own CLI and evaluates each final model with the VEEGAN / PacGAN protocol (2,500 samples from
the model's sampling generator -- the EMA generator when the config enables one --, a sample is high quality
within 3 standard deviations of its nearest mode, modes captured, reverse KL of the mode histogram).

    python experiments/toy_modes/run.py --seeds 10             # 20 runs; results.jsonl + README.md table
    python experiments/toy_modes/run.py --seeds 10 --jobs 2    # two runs at a time
    python experiments/toy_modes/run.py --table                # only rewrite the README table from results
    python experiments/toy_modes/run.py --quick                # 1 seed x 20 batches per config (a smoke test)

Each run is ``python -m lit_gen fit --config <config> --seed_everything <s> --data.init_args.seed <s>``
(in-process, ``LitGenCLI``), i.e. exactly what a user gets from the config; seed ``s`` changes the network
initialisation, the latent noise, and the draw and order of the training set. Results are appended to
``results.jsonl`` (one line per finished run; finished runs are skipped on a re-run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIGS = {"ring": ROOT / "configs" / "toy_ring.yaml", "grid": ROOT / "configs" / "toy_grid.yaml"}

#: PacGAN (Lin et al. 2018), Tables 1 and 3: 2,500 samples, 3 std, mean over trials
PUBLISHED = {
    "grid": [("GAN (PacGAN Table 1)", 17.3, 94.8), ("PacGAN4 (PacGAN Table 1)", 24.8, 93.6)],
    "ring": [("PacGAN4 (PacGAN Table 3)", 7.8, 95.9)],
}
#: issue 14: every mode in every seed, a mean high-quality share, and (grid) no seed under a floor
TARGETS = {"grid": (25, 96.0, 95.0), "ring": (8, 98.5, None)}
#: the targets are judged over this many seeds; a table of fewer says so instead of a verdict
TARGET_SEEDS = 10
EVAL_SAMPLES, EVAL_THRESHOLD = 2500, 3.0


def fit(config: Path, run_name: str, seed: int, run_root: str, extra: list[str], threads: int):
    """``python -m lit_gen fit --config <config>`` for one seed, in-process; returns (the finished ``LitGenCLI``,
    wall seconds, CPU seconds of this process)."""
    import torch

    from lit_gen.cli import LitGenCLI

    torch.set_num_threads(threads)
    sys.argv = sys.argv[:1]  # LightningCLI warns when both args= and a command line are given
    args = [
        "fit",
        "--config",
        str(config),
        "--seed_everything",
        str(seed),
        "--data.init_args.seed",
        str(seed),
        "--run.root",
        run_root,
        "--run.name",
        run_name,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]
    start, cpu_start = time.perf_counter(), time.process_time()
    cli = LitGenCLI(args=args)
    return cli, time.perf_counter() - start, time.process_time() - cpu_start


def train_and_evaluate(name: str, seed: int, run_root: str, extra: list[str], threads: int) -> dict:
    """One seed of one config through ``LitGenCLI``; returns the protocol's metrics of the final model."""
    import torch

    from lit_gen.metrics.modes import ModeCoverage

    cli, seconds, cpu_seconds = fit(CONFIGS[name], f"{name}-seed{seed}", seed, run_root, extra, threads)
    model, data = cli.model, cli.datamodule
    metric = ModeCoverage(data.modes, data.std, EVAL_THRESHOLD)
    # evaluation noise is independent of the training noise and of the callbacks' fixed batches
    samples = model.generate(EVAL_SAMPLES, rng=torch.Generator().manual_seed(10_000 + seed))
    metric.update(samples)
    result = {k: float(v) for k, v in metric.compute().items()}
    return {
        "config": name,
        "seed": seed,
        "modes": result["modes"],
        "high_quality": 100.0 * result["high_quality"],
        "reverse_kl": result["reverse_kl"],
        "batches": int(model.batches_seen),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "run_dir": str(cli.run_dir),
        "config_sha": config_sha(name),
        "extra_args": extra,
    }


def settings_sha(path: Path) -> str:
    """Short hash of a config file's settings (its parsed YAML), so that results of an older version of a config
    are never tabulated, while an edit of its comments (quoting the results, say) keeps them."""
    settings = yaml.safe_load(path.read_text())
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def config_sha(name: str) -> str:
    return settings_sha(CONFIGS[name])


def current(results: list[dict], extra: list[str] | tuple = (), sha=None) -> list[dict]:
    """Results of the configs as they are now (``sha``: a config's hash, default ``config_sha``), run with the
    given extra overrides (none: as shipped)."""
    sha = sha or config_sha
    return [
        r
        for r in results
        if r.get("config_sha") == sha(r["config"]) and tuple(r.get("extra_args", [])) == tuple(extra)
    ]


def _worker(job: tuple) -> dict:
    return train_and_evaluate(*job)


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table(results: list[dict]) -> str:
    """Markdown table: our mean ± std over seeds beside the published figures and the targets."""
    lines = [
        "| data | method | seeds | modes captured | high-quality samples (%) | reverse KL | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name in ("grid", "ring"):
        for method, modes, hq in PUBLISHED[name]:
            lines.append(f"| {name} | {method} | - | {modes} | {hq} | - | |")
        rows = [r for r in results if r["config"] == name]
        if rows:
            m, hq, kl = (mean_std([r[k] for r in rows]) for k in ("modes", "high_quality", "reverse_kl"))
            all_modes, target_hq, floor = TARGETS[name]
            met = min(r["modes"] for r in rows) >= all_modes and hq[0] >= target_hq
            verdict = f"{all_modes} in every seed / mean ≥ {target_hq} %"
            if floor is not None:
                # a share is a count ratio computed in float32 (2,375 of 2,500 reads 94.9999988 %): compare it at a
                # resolution far finer than one sample in 2,500 (0.04 %)
                met = met and min(round(r["high_quality"], 4) for r in rows) >= floor
                verdict += f", every seed ≥ {floor} %"
            if len(rows) < TARGET_SEEDS:
                verdict += f": undecided ({len(rows)} of {TARGET_SEEDS} seeds)"
            else:
                verdict += f": {'met' if met else 'NOT met'}"
            lines.append(
                f"| {name} | lit_gen `configs/toy_{name}.yaml` | {len(rows)} | {m[0]:.2f} ± {m[1]:.2f} "
                f"| {hq[0]:.1f} ± {hq[1]:.1f} | {kl[0]:.3f} ± {kl[1]:.3f} | {verdict} |"
            )
    return "\n".join(lines)


def per_seed(results: list[dict]) -> str:
    lines = [
        "| data | seed | modes | high quality (%) | reverse KL | batches | train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["config"], r["seed"])):
        lines.append(
            f"| {r['config']} | {r['seed']} | {r['modes']:.0f} | {r['high_quality']:.1f} "
            f"| {r['reverse_kl']:.3f} | {r['batches']} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def write_readme_table(readme: Path, results: list[dict]) -> None:
    replace_results(readme, f"{table(results)}\n\nPer seed:\n\n{per_seed(results)}")


def replace_results(readme: Path, body: str) -> None:
    """Replaces the text between the RESULTS markers of the README with ``body``."""
    begin, end = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"
    head, _, rest = readme.read_text().partition(begin)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def benchmark_parser(description: str, configs: list[str]) -> argparse.ArgumentParser:
    """The options of a toy benchmark: seeds, configs, parallel runs, results file, --table, --quick, overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, default=10, help="seeds first..first+N-1 (default 10)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=configs, choices=configs)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--results", type=Path, default=None, help="default: results.jsonl beside run.py")
    parser.add_argument("--run-root", default=None, help="where run directories go (default: a temp dir)")
    parser.add_argument("--table", action="store_true", help="only rewrite README.md's tables from results")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 seed, 40 optimizer steps, no logger"
    )
    parser.add_argument("extra", nargs="*", help="extra CLI overrides passed to every run (after --)")
    return parser


def quick_settings(args: argparse.Namespace, here: Path) -> list[str]:
    """The CLI overrides; with --quick one seed of 40 batches whose results go to a temp dir by default."""
    extra = list(args.extra)
    if args.quick:
        args.seeds = 1
        extra += ["--trainer.max_steps", "40", "--trainer.logger", "false"]
        if args.results is None:
            args.results = Path(tempfile.mkdtemp(prefix=f"{here.name}-quick-")) / "results.jsonl"
    args.results = args.results or here / "results.jsonl"
    return extra


def run_jobs(worker, jobs: list[tuple], parallel: int, results: Path) -> None:
    """``worker(job)`` for each job, ``parallel`` processes at a time, each result appended to ``results``."""
    print(f"{len(jobs)} runs", file=sys.stderr)
    os.environ.setdefault("WANDB_MODE", "offline")
    if parallel > 1:
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
            for result in pool.map(worker, jobs):
                record(results, result)
    else:
        for job in jobs:
            record(results, worker(job))


def main(argv: list[str] | None = None) -> None:
    args = benchmark_parser(__doc__.split("\n\n")[0], sorted(CONFIGS)).parse_args(argv)
    extra = quick_settings(args, HERE)
    if args.table:
        results = current(read_results(args.results))
        write_readme_table(HERE / "README.md", results)
        print(table(results))
        return
    run_root = args.run_root or tempfile.mkdtemp(prefix="toy_modes-")
    done = {(r["config"], r["seed"]) for r in current(read_results(args.results), extra)}
    jobs = [
        (name, seed, run_root, extra, args.threads)
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for name in args.configs
        if (name, seed) not in done
    ]
    print(f"run directories under {run_root}", file=sys.stderr)
    run_jobs(_worker, jobs, args.jobs, args.results)
    print(table(current(read_results(args.results), extra)))


def record(path: Path, result: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
