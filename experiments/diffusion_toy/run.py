"""Diffusion / flow-matching benchmark on the PacGAN 2-D mixtures: trains ``configs/fm_toy_grid.yaml``,
``configs/fm_toy_ring.yaml``, ``configs/edm_toy_grid.yaml`` and ``configs/edm_toy_ring.yaml`` over several seeds
through lit_gen's own CLI, then scores each final model (its EMA net) with the VEEGAN / PacGAN protocol of
``experiments/toy_modes`` (2,500 samples, high quality within 3 std of the nearest mode, modes captured, reverse
KL) for two or more samplers at NFE ~ 1, 2, 4, ..., 64 and at the config's own sampler, and, on the grid, the
exact likelihood: the model's NLL of fresh data samples (probability-flow ODE, exact divergence) against the
true mixture's NLL.

    python experiments/diffusion_toy/run.py --seeds 3               # 12 runs; results.jsonl, nfe.png, table
    python experiments/diffusion_toy/run.py --table                 # only rewrite README.md's table and nfe.png
    python experiments/diffusion_toy/run.py --quick                 # 1 seed x 40 batches per config (smoke test)

Each run is ``python -m lit_gen fit --config <config> --seed_everything <s> --data.init_args.seed <s>``
(in-process, ``toy_modes.fit``). Results are appended to ``results.jsonl`` (one line per finished run, with a hash
of its config; finished runs are skipped on a re-run, results of a config since changed are not tabulated).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIGS = {
    "fm_grid": ROOT / "configs" / "fm_toy_grid.yaml",
    "edm_grid": ROOT / "configs" / "edm_toy_grid.yaml",
    "fm_ring": ROOT / "configs" / "fm_toy_ring.yaml",
    "edm_ring": ROOT / "configs" / "edm_toy_ring.yaml",
}
NFE_TARGETS = (1, 2, 4, 8, 16, 32, 64)
#: issue 16: modes, mean high-quality share (at <= 40 NFE), and the grid's likelihood gap
TARGETS = {"grid": (24.9, 97.0), "ring": (8.0, 98.5)}
MAX_NFE, NLL_GAP = 40, 0.1


def _load_toy_modes():
    spec = importlib.util.spec_from_file_location("toy_modes_run", HERE.parent / "toy_modes" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toy_modes = _load_toy_modes()


def dataset(config: str) -> str:
    return config.split("_")[-1]


def samplers(config: str) -> dict:
    """Sampler name -> function of a target NFE returning a sampler whose NFE is the closest it allows
    (never above the target, except EDM Heun's minimum of 3)."""
    from lit_gen.diffusion import DDIM, EDMHeun, FlowEuler, FlowHeun

    if config.startswith("edm"):
        return {
            "EDMHeun": lambda nfe: EDMHeun(steps=max(2, (nfe + 1) // 2)),  # 2 * steps - 1 evaluations
            "DDIM": lambda nfe: DDIM(steps=nfe),
            # the EDM toy configs sample with it (samplers are path-free)
            "FlowHeun": lambda nfe: FlowHeun(steps=max(1, (nfe + 1) // 2)),
        }
    return {
        "FlowEuler": lambda nfe: FlowEuler(steps=nfe),
        "FlowHeun": lambda nfe: FlowHeun(steps=max(1, (nfe + 1) // 2)),
    }


def mode_scores(model, data, seed: int, sampler=None) -> dict:
    """The PacGAN protocol on ``EVAL_SAMPLES`` samples of ``sampler`` (default: the config's), and the NFE used."""
    import torch

    from lit_gen.metrics.modes import ModeCoverage

    metric = ModeCoverage(data.modes, data.std, toy_modes.EVAL_THRESHOLD)
    # the same evaluation noise for every sampler, independent of the training noise
    metric.update(
        model.generate(toy_modes.EVAL_SAMPLES, torch.Generator().manual_seed(10_000 + seed), sampler=sampler)
    )
    scores = {k: float(v) for k, v in metric.compute().items()}
    scores["high_quality"] *= 100.0
    return {"nfe": model.last_nfe, **scores}


def mixture_log_prob(x, modes, std: float):
    """log p(x) of the equal-weight isotropic Gaussian mixture, nats."""
    import torch

    d = x.shape[1]
    sq = torch.cdist(x.double(), modes.double()) ** 2
    log_n = -sq / (2 * std**2) - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)
    return torch.logsumexp(log_n, dim=1) - math.log(len(modes))


def likelihood_gap(model, data, seed: int, num: int, steps: int) -> dict:
    """Mean NLL (nats) of ``num`` fresh data samples under the model (ODE, ``steps`` RK4 steps) and the truth."""
    import torch

    x, _ = data.sample(num, torch.Generator().manual_seed(20_000 + seed))
    model_nll = -float(model.log_likelihood(x, exact=True, steps=steps).double().mean())
    true_nll = -float(mixture_log_prob(x, data.modes, data.std).mean())
    return {"model_nll": model_nll, "true_nll": true_nll, "nll_gap": model_nll - true_nll, "nll_steps": steps}


def train_and_evaluate(
    name: str, seed: int, run_root: str, extra: list[str], threads: int, quick: bool
) -> dict:
    cli, seconds, cpu_seconds = toy_modes.fit(
        CONFIGS[name], f"{name}-seed{seed}", seed, run_root, extra, threads
    )
    model, data = cli.model, cli.datamodule
    curves = {}
    for sampler_name, make in samplers(name).items():
        points = {}
        for target in NFE_TARGETS:
            score = mode_scores(model, data, seed, make(target))
            points.setdefault(score["nfe"], {"target_nfe": target, **score})
        curves[sampler_name] = sorted(points.values(), key=lambda p: p["nfe"])
    result = {
        "config": name,
        "seed": seed,
        "default_sampler": type(model.sampler).__name__,
        **mode_scores(model, data, seed),
        "curves": curves,
        "batches": int(model.batches_seen),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "run_dir": str(cli.run_dir),
        "config_sha": config_sha(name),
        "extra_args": extra,
    }
    if dataset(name) == "grid":
        result.update(likelihood_gap(model, data, seed, *((200, 4) if quick else (10_000, 100))))
    return result


def _worker(job: tuple) -> dict:
    return train_and_evaluate(*job)


def config_sha(name: str) -> str:
    return toy_modes.settings_sha(CONFIGS[name])


def current(results: list[dict], extra: list[str] | tuple = ()) -> list[dict]:
    """Results of the configs as they are now, run with the given extra overrides (none: as shipped)."""
    return toy_modes.current(results, extra, config_sha)


def curve_means(rows: list[dict], sampler: str) -> list[dict]:
    """Per actual NFE of ``sampler``: mean modes and high quality over the seeds."""
    by_nfe: dict[int, list[dict]] = {}
    for r in rows:
        for point in r["curves"][sampler]:
            by_nfe.setdefault(point["nfe"], []).append(point)
    return [
        {
            "nfe": nfe,
            "target_nfe": points[0]["target_nfe"],
            "modes": sum(p["modes"] for p in points) / len(points),
            "high_quality": sum(p["high_quality"] for p in points) / len(points),
        }
        for nfe, points in sorted(by_nfe.items())
    ]


#: the GAN toy configs' training CPU time, measured side by side with the diffusion runs (same machine, same
#: load): ``python experiments/toy_modes/run.py --seeds 1 --results experiments/diffusion_toy/gan_reference.jsonl``
GAN_REFERENCE = HERE / "gan_reference.jsonl"


def gan_cpu_seconds(data: str) -> float | None:
    """Median training CPU seconds of the GAN toy config's runs (as it is now) in ``gan_reference.jsonl``."""
    rows = toy_modes.current(toy_modes.read_results(GAN_REFERENCE))
    seconds = sorted(r["train_cpu_seconds"] for r in rows if r["config"] == data and "train_cpu_seconds" in r)
    return seconds[len(seconds) // 2] if seconds else None


def table(results: list[dict]) -> str:
    """Markdown tables: the configs' own samplers against the targets, then high quality against NFE."""
    mean_std = toy_modes.mean_std
    lines = [
        "| config | seeds | sampler (NFE) | modes | high quality (%) | reverse KL | best HQ at ≤ 40 NFE "
        "| NLL gap (nats) | train CPU s (GAN's) | target |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for name in CONFIGS:
        rows = [r for r in results if r["config"] == name]
        if not rows:
            continue
        data = dataset(name)
        m, hq, kl, cpu = (
            mean_std([r[k] for r in rows])
            for k in ("modes", "high_quality", "reverse_kl", "train_cpu_seconds")
        )
        modes_target, hq_target = TARGETS[data]
        # the best sampler / NFE among those that keep the modes (one Euler step puts every sample on the mean)
        points = [(p, s) for s in rows[0]["curves"] for p in curve_means(rows, s) if p["nfe"] <= MAX_NFE]
        best = max(
            [ps for ps in points if ps[0]["modes"] >= modes_target] or points,
            key=lambda ps: ps[0]["high_quality"],
        )
        met = min(m[0], best[0]["modes"]) >= modes_target and max(hq[0], best[0]["high_quality"]) >= hq_target
        verdict = f"≥ {modes_target} modes, ≥ {hq_target} % at ≤ {MAX_NFE} NFE: {'met' if met else 'NOT met'}"
        gap = "-"
        if "nll_gap" in rows[0]:
            g = mean_std([r["nll_gap"] for r in rows])
            gap = f"{g[0]:.3f} ± {g[1]:.3f}"
            verdict += f"; gap ≤ {NLL_GAP}: {'met' if abs(g[0]) <= NLL_GAP else 'NOT met'}"
        if len(rows) < toy_modes.TARGET_SEEDS:
            verdict += f"; undecided: {len(rows)} of {toy_modes.TARGET_SEEDS} seeds"
        gan = gan_cpu_seconds(data)
        if gan is not None:
            verdict += f"; CPU ≤ the GAN's: {'met' if cpu[0] <= gan else 'NOT met'}"
        lines.append(
            f"| `configs/{CONFIGS[name].name}` | {len(rows)} | {rows[0]['default_sampler']} ({rows[0]['nfe']}) "
            f"| {m[0]:.2f} ± {m[1]:.2f} | {hq[0]:.1f} ± {hq[1]:.1f} | {kl[0]:.3f} ± {kl[1]:.3f} "
            f"| {best[0]['high_quality']:.1f} ({best[1]}, {best[0]['nfe']}) | {gap} "
            f"| {cpu[0]:.0f} ({'-' if gan is None else f'{gan:.0f}'}) | {verdict} |"
        )
    lines += [
        "",
        "High-quality samples (%) / modes captured against NFE (mean over the seeds; NFE as run):",
        "",
        "| config | sampler | " + " | ".join(f"NFE ~{n}" for n in NFE_TARGETS) + " |",
        "|---|---|" + "---:|" * len(NFE_TARGETS),
    ]
    for name in CONFIGS:
        rows = [r for r in results if r["config"] == name]
        for sampler in rows[0]["curves"] if rows else ():
            cells = {p["target_nfe"]: p for p in curve_means(rows, sampler)}
            row = " | ".join(
                f"{cells[n]['high_quality']:.1f} / {cells[n]['modes']:.1f} ({cells[n]['nfe']})"
                if n in cells
                else "="
                for n in NFE_TARGETS
            )
            lines.append(f"| {name} | {sampler} | {row} |")
    return "\n".join(lines)


def per_seed(results: list[dict]) -> str:
    lines = [
        "| config | seed | modes | high quality (%) | reverse KL | NLL model / true (nats) | batches "
        "| train wall s | train CPU s |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["config"], r["seed"])):
        nll = f"{r['model_nll']:.3f} / {r['true_nll']:.3f}" if "nll_gap" in r else "-"
        lines.append(
            f"| {r['config']} | {r['seed']} | {r['modes']:.0f} | {r['high_quality']:.1f} | {r['reverse_kl']:.3f} "
            f"| {nll} | {r['batches']} | {r['train_seconds']:.0f} | {r['train_cpu_seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """Modes and high quality against NFE, one column per data set, one line per config and sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({dataset(r["config"]) for r in results})
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 7), squeeze=False)
    for col, data in enumerate(datasets):
        for name in CONFIGS:
            rows = [r for r in results if r["config"] == name]
            if dataset(name) != data or not rows:
                continue
            for sampler in rows[0]["curves"]:
                points = curve_means(rows, sampler)
                nfe = [p["nfe"] for p in points]
                for row, key in enumerate(("modes", "high_quality")):
                    axes[row, col].plot(nfe, [p[key] for p in points], "o-", label=f"{name} {sampler}")
        modes_target, hq_target = TARGETS[data]
        axes[0, col].axhline(modes_target, color="grey", ls=":")
        axes[1, col].axhline(hq_target, color="grey", ls=":")
        axes[0, col].set_title(f"{data} (mean over the seeds)")
        axes[0, col].set_ylabel("modes captured")
        axes[1, col].set_ylabel("high-quality samples (%)")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("network evaluations (NFE)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = toy_modes.benchmark_parser(__doc__.split("\n\n")[0], list(CONFIGS)).parse_args(argv)
    extra = toy_modes.quick_settings(args, HERE)
    if args.table:
        results = current(toy_modes.read_results(args.results))
        body = f"{table(results)}\n\nPer seed (the config's own sampler):\n\n{per_seed(results)}"
        toy_modes.replace_results(HERE / "README.md", body)
        plot(results, HERE / "nfe.png")
        print(table(results))
        return
    run_root = args.run_root or tempfile.mkdtemp(prefix="diffusion_toy-")
    done = {(r["config"], r["seed"]) for r in current(toy_modes.read_results(args.results), extra)}
    jobs = [
        (name, seed, run_root, extra, args.threads, args.quick)
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for name in args.configs
        if (name, seed) not in done
    ]
    print(f"run directories under {run_root}", file=sys.stderr)
    toy_modes.run_jobs(_worker, jobs, args.jobs, args.results)
    print(table(current(toy_modes.read_results(args.results), extra)))


if __name__ == "__main__":
    main()
