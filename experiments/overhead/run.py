"""Framework overhead: time per training iteration of the lit_gen GAN and diffusion model (the real ``GAN`` and
``Diffusion`` LightningModules, built from a shipped config by ``LitGenCLI`` and trained by a Lightning
``Trainer``) against a plain PyTorch loop over the same networks, data loader, optimizers and per-iteration work,
side by side in one process.

    python experiments/overhead/run.py                      # all cases, 5 interleaved repeats each
    python experiments/overhead/run.py --cases diffusion --repeats 5 --warmup 5 --iters 30 --threads 1
    python experiments/overhead/run.py --cases toy --repeats 3 --iters 300
    python experiments/overhead/run.py --profile toy        # cProfile of the Lightning side (top 40)

Lightning side: ``python -m lit_gen fit --config <config>`` exactly as a user runs it -- the progress bar on
(``fit``'s default ``lit_gen.callbacks.ProgressBar``: Lightning's TQDM bar, redrawn at most every 0.5 s;
written to a log file), the config's loggers (W&B, offline, + CSV in both configs), ``log_every_n_steps`` and
callbacks (sample grids, mode metrics) and the CLI's own (checkpoint, non-finite loss guard, SLURM requeue,
config saver) -- with these differences, stated in the output: ``trainer.max_steps`` is cut to ``warmup +
iters`` batches, the model summary is off, ``accelerator: cpu``, the benchmark adds one callback (the clock that
reads the time at batch ends), and the DCGAN case trains on random CIFAR-shaped images (3x32x32 in [0, 1],
``num_workers: 0``, the config's batch of 128) instead of downloading CIFAR-10. The config's periodic callbacks
do not fire inside the timed window (their periods are longer); the final checkpoint is written after it. An
evaluation the config runs at the end of fit (the diffusion config's ``SampleQuality``: 500 samples of 35 network
evaluations) is turned off (``at_train_end``): it would run after the timed window, for half a minute a run.

Plain side: the same ``nn.Module`` classes with the same initial weights, the optimizers built by the model's own
injected optimizer callables (same class, lr, betas), the same loss and penalty objects, the same ``DataLoader``,
and per iteration: fetch a batch (a new loader iterator when an epoch ends), one forward of G, a D step on real
and detached fake samples (PacGAN packing when the config packs, plus the gradient penalty when it has one), a G
step with D's parameters frozen (what ``toggle_optimizer`` does), the generator EMA update when the config
enables EMA, and the loss values kept every ``log_every_n_steps`` iterations. It draws the latents from the
global RNG (lit_gen seeds a generator per batch, for resumable noise: counted as overhead) and does not step LR
schedulers (the toy config's two ``LinearLR`` steps per batch, a few microseconds, are on the Lightning side
only).

Diffusion case (``configs/diffusion.yaml``: EDM, a class-conditional U-Net at 32 px, batch 64 of the embedded
digits, Adam, EMA with ramp-up, label dropout 0.1): the plain loop has the same U-Net (same initial weights),
``DataLoader``, optimizer (built by the model's injected callable) and path object, and per iteration: fetch a
batch, map it to [-1, 1], draw the noise levels (the path's training distribution), the Gaussian noise and the
label dropout from the global RNG (lit_gen: a seeded generator per stream and batch, drawn for the global batch),
the noisy input, a forward, the path's loss, backward, the optimizer step, the EMA update (the module's decay
schedule, ``EMA.decay_at``; a ``lerp_`` per parameter, buffers copied), and the loss value kept every
``log_every_n_steps`` iterations.

The time per iteration is measured between the ends of iteration ``warmup`` and ``warmup + iters`` on both sides
(data fetching, hooks, logging and progress bar included). Repeats alternate Lightning/plain in ABBA order, and
the ratio is the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from lightning.pytorch import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import TensorDataset

from lit_gen.callbacks.samples import batches_done
from lit_gen.cli import LitGenCLI
from lit_gen.data.vision import CIFAR10

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    # name: (config, CLI overrides besides max_steps)
    "dcgan32": (
        "configs/dcgan_cifar10.yaml",
        [
            "--data",
            "__main__.RandomCIFAR10",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.download",
            "false",
        ],
    ),
    "toy": ("configs/toy_grid.yaml", []),
    "diffusion": ("configs/diffusion.yaml", []),
}
TARGETS = {"dcgan32": 1.05, "toy": 1.25, "diffusion": 1.05}
#: optimizer steps (what ``max_steps`` counts) per training batch: the GAN (n_critic 1) steps D and G
OPTIMIZER_STEPS_PER_BATCH = {"dcgan32": 2, "toy": 2, "diffusion": 1}
#: untimed and timed iterations by default
DEFAULT_ITERATIONS = {"dcgan32": (5, 30), "toy": (50, 500), "diffusion": (5, 30)}


class RandomCIFAR10(CIFAR10):
    """CIFAR-10's DataModule with random CIFAR-shaped images in [0, 1] instead of the downloaded files."""

    def __init__(self, *args, num_images: int = 2048, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_images = num_images

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            g = torch.Generator().manual_seed(self.seed)
            images = torch.rand(self.num_images, *self.image_shape, generator=g)
            labels = torch.randint(10, (self.num_images,), generator=g)
            self.train_set = TensorDataset(images, labels)
            self.val_set = TensorDataset(images[:256], labels[:256])


class IterationClock(Callback):
    """(wall, CPU) times at the end of training batches ``warmup`` and ``warmup + iters``."""

    def __init__(self, warmup: int, iters: int) -> None:
        self.warmup, self.iters = warmup, iters
        self.start = self.stop = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = batches_done(trainer)
        if done == self.warmup:
            self.start = clock()
        elif done == self.warmup + self.iters:
            self.stop = clock()


class BenchCLI(LitGenCLI):
    """``LitGenCLI`` that, before ``fit``, keeps a copy of the initial networks (for the plain loop: the GAN's
    ``initial_generator`` and ``initial_discriminator``, the diffusion model's ``initial_net``), turns off the
    evaluations at the end of fit and adds the clock callback; optionally profiles ``fit``."""

    warmup, iters = 0, 0
    profiler: cProfile.Profile | None = None

    def before_fit(self) -> None:
        for name in ("generator", "discriminator", "net"):
            if hasattr(self.model, name):
                setattr(self, f"initial_{name}", copy.deepcopy(getattr(self.model, name)))
        for callback in self.trainer.callbacks:
            if hasattr(callback, "at_train_end"):
                callback.at_train_end = False
        self.clock = IterationClock(self.warmup, self.iters)
        self.trainer.callbacks.append(self.clock)
        if self.profiler is not None:
            self.profiler.enable()

    def after_fit(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()


def lightning_run(case: str, warmup: int, iters: int, run_root: str, extra: list[str], log, profiler=None):
    """``fit`` of ``warmup + iters`` batches through the CLI; returns ((wall, CPU) seconds per timed iteration,
    the CLI)."""
    config, overrides = CASES[case]
    BenchCLI.warmup, BenchCLI.iters, BenchCLI.profiler = warmup, iters, profiler
    args = [
        "fit",
        "--config",
        str(ROOT / config),
        *overrides,
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.max_steps",
        str(OPTIMIZER_STEPS_PER_BATCH[case] * (warmup + iters)),
        "--run.root",
        run_root,
        *extra,
    ]
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        cli = BenchCLI(args=args)
    assert getattr(cli.model, "n_critic", 1) == 1 and batches_done(cli.trainer) == warmup + iters
    return per_iteration(cli.clock.start, cli.clock.stop, iters), cli


def plain_gan_run(cli: BenchCLI, warmup: int, iters: int) -> tuple[float, float]:
    """The iteration of ``GAN.training_step`` (n_critic 1) as a plain PyTorch loop; (wall, CPU)
    seconds per timed iteration."""
    model = cli.model
    if model.n_critic != 1:
        raise SystemExit("the plain loop mirrors n_critic 1")
    generator = copy.deepcopy(cli.initial_generator).train()
    discriminator = copy.deepcopy(cli.initial_discriminator).train()
    opt_g = model.generator_optimizer(generator.parameters())
    opt_d = model.discriminator_optimizer(discriminator.parameters())
    ema = None
    if model.generator_ema is not None:
        ema = AveragedModel(
            generator, multi_avg_fn=get_ema_multi_avg_fn(model.hparams.ema_decay), use_buffers=False
        )
        ema.requires_grad_(False)
    loss, penalty, pack, latent_dim = model.loss, model.penalty, model.pack, model.latent_dim
    log_every = cli.trainer.log_every_n_steps
    logged: list[float] = []

    def discriminate(x: torch.Tensor) -> torch.Tensor:
        if pack > 1:
            x = x.reshape(x.shape[0] // pack, -1, *x.shape[2:])
        return discriminator(x)

    batches = endless(cli.datamodule.train_dataloader())
    start = (0.0, 0.0)
    for it in range(1, warmup + iters + 1):
        real = next(batches)[0]
        if real.dim() == 4:
            real = real * 2.0 - 1.0
        n = real.shape[0] - real.shape[0] % pack
        real = real[:n]
        fake = generator(torch.randn(n, latent_dim))
        d_loss = loss.discriminator(discriminate(real), discriminate(fake.detach()))
        d_total = d_loss
        if penalty is not None:
            d_total = d_loss + penalty(discriminate, real, fake.detach(), torch.rand(n))
        opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        g_loss = loss.generator(discriminate(fake))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        if ema is not None:
            with torch.no_grad():
                ema.update_parameters(generator)
                for ema_buffer, buffer in zip(ema.module.buffers(), generator.buffers()):
                    ema_buffer.copy_(buffer)
        if it % log_every == 0:
            logged += [d_loss.item(), g_loss.item()]
        if it == warmup:
            start = clock()
    return per_iteration(start, clock(), iters)


def plain_diffusion_run(cli: BenchCLI, warmup: int, iters: int) -> tuple[float, float]:
    """The iteration of ``Diffusion.training_step`` and its EMA update as a plain PyTorch loop; (wall, CPU)
    seconds per timed iteration."""
    model = cli.model
    net = copy.deepcopy(cli.initial_net).train()
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = model.optimizer(net.parameters())
    path, label_dropout, null_class = model.path, model.label_dropout, model.num_classes
    log_every = cli.trainer.log_every_n_steps
    logged: list[float] = []
    batches = endless(cli.datamodule.train_dataloader())
    start = (0.0, 0.0)
    for it in range(1, warmup + iters + 1):
        data, labels = next(batches)
        data = data * 2.0 - 1.0
        n = data.shape[0]
        t = path.sample_training_noise_level(n)
        noise = path.couple(data, torch.randn_like(data))
        if label_dropout > 0:
            labels = torch.where(torch.rand(n) < label_dropout, torch.full_like(labels, null_class), labels)
        output = net(*path.model_input(path.noisy(data, noise, t), t), labels=labels)
        loss = path.loss(output, data, noise, t).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if model.net_ema is not None:
            with torch.no_grad():
                weight = 1.0 - model.net_ema.decay_at(it - 1)
                for ema_parameter, parameter in zip(ema.parameters(), net.parameters()):
                    ema_parameter.lerp_(parameter, weight)
                for ema_buffer, buffer in zip(ema.buffers(), net.buffers()):
                    ema_buffer.copy_(buffer)
        if it % log_every == 0:
            logged.append(loss.item())
        if it == warmup:
            start = clock()
    return per_iteration(start, clock(), iters)


PLAIN_RUNS = {"dcgan32": plain_gan_run, "toy": plain_gan_run, "diffusion": plain_diffusion_run}


def endless(loader) -> Iterator:
    """The loader's batches, epoch after epoch (a new iterator at each epoch's end, as the Trainer starts one)."""
    while True:
        yield from loader


def clock() -> tuple[float, float]:
    """(wall-clock, CPU time of this process) in seconds."""
    return time.perf_counter(), time.process_time()


def per_iteration(start: tuple[float, float], stop: tuple[float, float], iters: int) -> tuple[float, float]:
    return (stop[0] - start[0]) / iters, (stop[1] - start[1]) / iters


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench(case: str, repeats: int, warmup: int, iters: int, extra: list[str], run_root: str, log) -> dict:
    """``repeats`` lit_gen/plain pairs in ABBA order; medians of the per-iteration times and of the per-pair
    ratios, for wall-clock and for CPU time."""
    lit, plain = [], []
    cli = lightning_run(case, 2, 2, run_root, extra, log)[1]  # warms imports and caches; not timed
    loads = [load_average()]
    for r in range(repeats):
        for side in "LP" if r % 2 == 0 else "PL":
            if side == "L":
                seconds, cli = lightning_run(case, warmup, iters, run_root, extra, log)
                lit.append(seconds)
            else:
                plain.append(PLAIN_RUNS[case](cli, warmup, iters))
        print(
            f"  {case} {r + 1}/{repeats}: wall lit_gen {1e3 * lit[-1][0]:.2f} / plain {1e3 * plain[-1][0]:.2f} "
            f"ms/it = {lit[-1][0] / plain[-1][0]:.3f}; CPU lit_gen {1e3 * lit[-1][1]:.2f} / plain "
            f"{1e3 * plain[-1][1]:.2f} ms/it = {lit[-1][1] / plain[-1][1]:.3f}  (load {load_average()})",
            file=sys.stderr,
            flush=True,
        )
        loads.append(load_average())
    result = {"case": case, "config": CASES[case][0], "batch_size": cli.datamodule.batch_size}
    result.update(load_start=loads[0], load_end=loads[-1], repeats=repeats, warmup=warmup, iters=iters)
    for k, kind in enumerate(("wall", "cpu")):
        ratios = [a[k] / b[k] for a, b in zip(lit, plain)]
        result[kind] = {
            "lit_gen_ms": 1e3 * statistics.median(a[k] for a in lit),
            "plain_ms": 1e3 * statistics.median(b[k] for b in plain),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return result


def profile(case: str, warmup: int, iters: int, extra: list[str], run_root: str, log) -> None:
    """cProfile of the Lightning side's ``fit`` (top functions by cumulative time, own code and Lightning)."""
    lightning_run(case, 2, 2, run_root, extra, log)
    profiler = cProfile.Profile()
    lightning_run(case, warmup, iters, run_root, extra, log, profiler=profiler)
    profiler.dump_stats(Path(run_root) / "profile.out")
    print(f"profile written to {Path(run_root) / 'profile.out'}")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=5, help="Lightning/plain pairs per case")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (default: per case)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default: per case)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--profile", choices=sorted(CASES), help="profile the Lightning side of one case")
    parser.add_argument("--run-root", default=None, help="where run directories go (default: a temp dir)")
    parser.add_argument("extra", nargs="*", help="extra CLI overrides for the Lightning side (after --)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    sys.argv = sys.argv[:1]  # LightningCLI warns when both args= and a command line are given
    run_root = args.run_root or tempfile.mkdtemp(prefix="overhead-")
    Path(run_root).mkdir(parents=True, exist_ok=True)
    with open(Path(run_root) / "lightning.log", "w") as log:
        if args.profile:
            warmup, iters = DEFAULT_ITERATIONS[args.profile]
            profile(args.profile, args.warmup or warmup, args.iters or iters, args.extra, run_root, log)
            return
        print(f"torch threads {torch.get_num_threads()}, load average {load_average()}", file=sys.stderr)
        results = []
        for case in args.cases:
            warmup, iters = DEFAULT_ITERATIONS[case]
            results.append(
                bench(
                    case, args.repeats, args.warmup or warmup, args.iters or iters, args.extra, run_root, log
                )
            )
    print(f"load average at the end {load_average()}; torch threads {torch.get_num_threads()}")
    print("| case | config | batch | time | lit_gen ms/it | plain ms/it | ratio: median (min-max) | target |")
    print("|---|---|---:|---|---:|---:|---|---|")
    for r in results:
        for kind in ("cpu", "wall"):
            m = r[kind]
            verdict = "met" if m["ratio"] <= TARGETS[r["case"]] else "NOT met"
            print(
                f"| {r['case']} | `{r['config']}` | {r['batch_size']} | {kind} | {m['lit_gen_ms']:.2f} "
                f"| {m['plain_ms']:.2f} | {m['ratio']:.3f} ({m['ratio_min']:.3f}-{m['ratio_max']:.3f}) "
                f"| ≤ {TARGETS[r['case']]}: {verdict} |"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
