"""The digits checks of the diffusion quickstart (issue 16): what ``configs/diffusion.yaml`` costs, whether
``sample --labels K`` gives K, and the diffusion quickstart against the GAN quickstart (``configs/gan.yaml``) at
equal CPU time, both on the embedded 8x8 digits upsampled to 32 px.

    python experiments/diffusion_digits/run.py            # stages 1-7; results.json + README.md tables
    python experiments/diffusion_digits/run.py --follow-up <run root>/class-check-XXXX    # stage 8
    python experiments/diffusion_digits/run.py --table    # only rewrite README.md's tables from results.json
    python experiments/diffusion_digits/run.py --quick    # 40 optimizer steps per run, 10 samples per class

Every training run is ``python -m lit_gen fit --config <config>`` in-process (``LitGenCLI``), one torch thread,
with one callback added: ``CPUClock``, which splits the process CPU time of the fit into the monitoring callbacks'
share (``SampleGrid``, ``SampleQuality``: it times their hooks) and training (everything else), and can stop
training at a budget of training CPU seconds. Stages, in order (each result is written to ``results.json`` as it
comes):

1. the GAN quickstart as shipped;
2. the diffusion quickstart as shipped (its CPU time is the quickstart's cost; the clock also keeps a copy of the
   model when its training CPU reaches the GAN's, for stage 7);
3. a CNN classifier trained on the training split of the config's data module, tested on its held-out split;
4. per class K = 0..9, ``sample --ckpt_path <diffusion last.ckpt> --labels K`` at guidance 1.5 (the config's when this
   was first run; it samples at 2 since) and 1 (conditional, no guidance), and 0 (the unconditional model: a control) -- the share recognised as K;
5. the same-embedding scores (``RandomConvFeatures``: fd_random, KID, precision/recall, density/coverage) of
   1,000 samples of each quickstart against the 1,617 training digits (the held-out 180 real digits beside);
6. the GAN trained for the diffusion quickstart's training CPU time (monitoring off), scored the same way;
7. the diffusion model at the GAN quickstart's training CPU time (the copy from stage 2), scored the same way;
8. (``--follow-up``) the class check at stronger guidance, every class check's samples judged by classifiers of
   other seeds, and the same-embedding scores against the guidance weight.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIGS = {"gan": ROOT / "configs" / "gan.yaml", "diffusion": ROOT / "configs" / "diffusion.yaml"}
RESULTS = HERE / "results.json"
#: samples scored per model, and per class in the class check; guidance weights of the class check
EVAL_SAMPLES, PER_CLASS, CONTROL_PER_CLASS = 1000, 100, 20
GUIDANCES = (1.5, 1.0)
#: the follow-up: stronger guidance on the same checkpoint (``sample --guidance W``), and classifiers of other seeds
MORE_GUIDANCES, MORE_PER_CLASS, CLASSIFIER_SEEDS = (2.0, 3.0), 50, (0, 1, 2)
CLASSIFIER_EPOCHS = 30
CLASSES = 10
TARGET_RECOGNISED = 95.0


class CPUClock(Callback):
    """Process CPU seconds of a fit: ``setup`` (before the first batch), ``monitoring`` (the hooks of the
    ``SampleGrid`` and ``SampleQuality`` callbacks, timed by wrapping them) and training (the rest). With
    ``budget`` it stops training once the training CPU reaches it; with ``snapshot_at`` it keeps a copy of the
    model's state when the training CPU first reaches that many seconds."""

    def __init__(self, budget: float | None = None, snapshot_at: float | None = None) -> None:
        self.budget, self.snapshot_at = budget, snapshot_at
        self.fit_start = self.train_start = 0.0
        self.monitoring = 0.0
        self.snapshot: dict | None = None
        self.snapshot_batches = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        from lit_gen.callbacks import SampleGrid, SampleQuality

        self.fit_start = time.process_time()
        for callback in trainer.callbacks:
            if isinstance(callback, (SampleGrid, SampleQuality)):
                for hook in ("on_train_batch_end", "on_train_end"):
                    setattr(callback, hook, self._timed(getattr(callback, hook)))

    def _timed(self, hook):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return hook(*args, **kwargs)
            finally:
                self.monitoring += time.process_time() - start

        return timed

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_start = time.process_time()

    def training_seconds(self) -> float:
        return time.process_time() - self.train_start - self.monitoring

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        spent = self.training_seconds()
        if self.snapshot_at is not None and self.snapshot is None and spent >= self.snapshot_at:
            self.snapshot = copy.deepcopy(pl_module.state_dict())
            self.snapshot_batches = int(pl_module.batches_seen)
        if self.budget is not None and spent >= self.budget:
            trainer.should_stop = True


def fit(name: str, run_root: str, extra: list[str], clock: CPUClock) -> tuple:
    """``python -m lit_gen fit --config <config> <extra>`` in-process with ``clock``; returns (the finished
    ``LitGenCLI``, a dict of its CPU and wall seconds)."""
    from lit_gen.cli import LitGenCLI

    sys.argv = sys.argv[:1]  # LightningCLI warns when both args= and a command line are given
    # a fresh statistics cache: each run computes its real-data reference as a first run does
    os.environ["LIT_GEN_STATS_DIR"] = tempfile.mkdtemp(prefix=f"stats-{name}-")
    args = ["fit", "--config", str(CONFIGS[name]), "--run.root", run_root, "--run.name", name]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra]
    load = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    cli = LitGenCLI(args=args, trainer_defaults={"callbacks": [clock]})
    setup = clock.train_start - cpu
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    seconds = {
        "fit_cpu_s": round(cpu, 1),
        "fit_wall_s": round(wall, 1),
        "monitoring_cpu_s": round(clock.monitoring, 1),
        "setup_cpu_s": round(setup, 1),
        "training_cpu_s": round(cpu - clock.monitoring - setup, 1),
        "batches": int(cli.model.batches_seen),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "run_dir": str(cli.run_dir),
        "args": args[1:],
    }
    return cli, seconds


def startup_cpu_seconds() -> float:
    """User + sys CPU of a fresh interpreter importing what ``python -m lit_gen fit`` imports before training
    (the part of the command's cost an in-process fit does not see)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = "import lit_gen.cli, lit_gen.models, lit_gen.data, lit_gen.callbacks, lit_gen.metrics, wandb"
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1)


def quickstart_eval(run_dir: str) -> dict:
    """The last in-training evaluation the quickstart logged itself (``<run>/eval/metrics.jsonl``)."""
    lines = (Path(run_dir) / "eval" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    return {"batches": record["batches"], "num_fake": record["num_fake"], **record["metrics"]}


# --- the classifier of the class check ---------------------------------------------------------------------------


def digit_classifier() -> nn.Module:
    """A small CNN for 1x32x32 digits in [0, 1]."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, CLASSES),
    )


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to ``pixels`` in x and y (zero fill, the digits' background)."""
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, [pixels] * 4)
    dx, dy = (torch.randint(0, 2 * pixels + 1, (n,), generator=generator) for _ in range(2))
    return torch.stack([p[:, y : y + h, x : x + w] for p, x, y in zip(padded, dx.tolist(), dy.tolist())])


def tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.stack(labels)


def train_classifier(datamodule, epochs: int, seed: int = 0) -> tuple[nn.Module, dict]:
    """The classifier trained on the data module's training split (random shifts of up to 2 px), and its
    accuracy on the held-out split."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_x, train_y = tensors(datamodule.train_set)
    test_x, test_y = tensors(datamodule.val_set)
    model = digit_classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    cpu = time.process_time()
    for _ in range(epochs):
        for idx in torch.randperm(len(train_x), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(random_shift(train_x[idx], 2, generator)), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    accuracy = 100.0 * float((predict(model, test_x) == test_y).float().mean())
    return model, {
        "train_images": len(train_x),
        "test_images": len(test_x),
        "epochs": epochs,
        "test_accuracy": round(accuracy, 2),
        "train_cpu_s": round(time.process_time() - cpu, 1),
    }


@torch.no_grad()
def predict(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([classifier(chunk).argmax(1) for chunk in images.split(500)])


# --- sampling and scoring ----------------------------------------------------------------------------------------


def sample_class(
    ckpt: str, label: int, num: int, guidance: float, out_dir: Path
) -> tuple[torch.Tensor, float]:
    """``python -m lit_gen sample --ckpt_path <ckpt> --labels <label> --guidance <w>`` (in-process); returns the
    samples and the CPU seconds of the command."""
    from lit_gen.commands.sample import main as sample_main

    cpu = time.process_time()
    argv = ["--ckpt_path", ckpt, "--labels", str(label), "--num_samples", str(num)]
    sample_main([*argv, "--guidance", str(guidance), "--seed", str(100 + label), "--out_dir", str(out_dir)])
    return torch.load(out_dir / "samples.pt"), time.process_time() - cpu


def class_check(ckpt: str, classifier: nn.Module, guidance: float, per_class: int, out_root: Path) -> dict:
    """Per class K, ``per_class`` samples of ``sample --labels K`` and the share the classifier calls K."""
    recognised, confusion, all_samples, cpu = {}, [], [], 0.0
    for label in range(CLASSES):
        samples, seconds = sample_class(
            ckpt, label, per_class, guidance, out_root / f"w{guidance}" / str(label)
        )
        predicted = predict(classifier, samples)
        recognised[str(label)] = round(100.0 * float((predicted == label).float().mean()), 1)
        confusion.append(torch.bincount(predicted, minlength=CLASSES).tolist())
        all_samples.append(samples)
        cpu += seconds
    return {
        "guidance": guidance,
        "per_class": per_class,
        "recognised": recognised,
        "overall": round(sum(recognised.values()) / CLASSES, 2),
        "worst": min(recognised.values()),
        "confusion": confusion,
        "sampling_cpu_s_per_sample": round(cpu / (per_class * CLASSES), 4),
        "samples": torch.cat(all_samples),
    }


def quality(images: torch.Tensor, datamodule) -> dict:
    """The quickstarts' in-training metrics on ``images``: fd_random, KID, precision/recall (k 3) and
    density/coverage (k 5) in ``RandomConvFeatures`` against the data module's training split."""
    from lit_gen.metrics import GenerativeMetrics, RandomConvFeatures
    from lit_gen.metrics.reference import reference_from_datamodule

    extractor = RandomConvFeatures()
    reference, _, _ = reference_from_datamodule(datamodule, "train", extractor)
    metric = GenerativeMetrics(extractor, reference, metrics=["fd", "kd", "pr", "dc"], kid_subsets=10)
    for chunk in images.split(250):
        metric.update(chunk)
    return {"num_fake": len(images), **{k: round(float(v), 4) for k, v in metric.compute().items()}}


def gan_samples(model, num: int) -> tuple[torch.Tensor, float]:
    cpu = time.process_time()
    with torch.no_grad():
        samples = model.generate(num, rng=torch.Generator().manual_seed(10_000))
    return samples, (time.process_time() - cpu) / num


def diffusion_samples(model, per_class: int, guidance: float) -> torch.Tensor:
    """``per_class`` samples of each class, with the class check's seeds (the module API ``sample`` calls)."""
    chunks = []
    for label in range(CLASSES):
        rng = torch.Generator().manual_seed(100 + label)
        chunks.append(model.generate(per_class, rng=rng, labels=label, guidance=guidance).cpu())
    return torch.cat(chunks)


# --- the run -----------------------------------------------------------------------------------------------------


def save(results: dict) -> None:
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"[{time.strftime('%H:%M:%S')}] saved {sorted(results)}", file=sys.stderr, flush=True)


def run(quick: bool, run_root: str) -> dict:
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_MODE", "offline")
    per_class = 10 if quick else PER_CLASS
    short = ["--trainer.max_steps", "40", "--trainer.logger", "false"] if quick else []
    results: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": quick,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "startup_cpu_s": startup_cpu_seconds(),
    }

    # 1. the GAN quickstart as shipped
    gan_clock = CPUClock()
    gan_cli, results["gan"] = fit("gan", run_root, short, gan_clock)
    results["gan"]["own_eval"] = quickstart_eval(results["gan"]["run_dir"])
    samples, per_sample = gan_samples(gan_cli.model, EVAL_SAMPLES)
    results["gan"]["sampling_cpu_s_per_sample"] = round(per_sample, 5)
    datamodule = gan_cli.datamodule
    results["gan"]["quality"] = quality(samples, datamodule)
    save(results)

    # 2. the diffusion quickstart as shipped, with a copy of the model at the GAN's training CPU
    diffusion_clock = CPUClock(snapshot_at=results["gan"]["training_cpu_s"])
    diffusion_cli, results["diffusion"] = fit("diffusion", run_root, short, diffusion_clock)
    results["diffusion"]["own_eval"] = quickstart_eval(results["diffusion"]["run_dir"])
    save(results)

    # 3. the classifier, on the same 32 px digits in [0, 1] the models see
    classifier, results["classifier"] = train_classifier(
        diffusion_cli.datamodule, 2 if quick else CLASSIFIER_EPOCHS
    )
    save(results)

    # 4. the class check through `sample --labels K`
    ckpt = str(Path(results["diffusion"]["run_dir"]) / "checkpoints" / "last.ckpt")
    out_root = Path(tempfile.mkdtemp(prefix="class-check-", dir=run_root))
    results["class_check_dir"] = str(out_root)
    checks = [class_check(ckpt, classifier, w, per_class, out_root) for w in GUIDANCES]
    checks.append(class_check(ckpt, classifier, 0.0, CONTROL_PER_CLASS // (2 if quick else 1), out_root))
    diffusion_images = checks[0].pop("samples")  # guidance 1.5: the config's samples, 100 of each class
    for check in checks[1:]:
        check.pop("samples")
    results["class_check"] = checks
    save(results)

    # 5. the same-embedding scores of the two quickstarts and of the held-out real digits
    results["diffusion"]["sampling_cpu_s_per_sample"] = checks[0]["sampling_cpu_s_per_sample"]
    results["diffusion"]["nfe"] = int(diffusion_cli.model.sampler.nfe)
    results["diffusion"]["quality"] = quality(diffusion_images, datamodule)
    results["real_heldout"] = {"quality": quality(tensors(datamodule.val_set)[0], datamodule)}
    save(results)

    # 6. the GAN for the diffusion quickstart's training CPU, monitoring off
    budget = results["diffusion"]["training_cpu_s"]
    extended = ["--trainer.max_steps", "-1", "--trainer.max_epochs", "-1", "--trainer.callbacks", "[]"]
    gan_long_cli, results["gan_at_diffusion_cpu"] = fit(
        "gan", run_root, [*extended, *short], CPUClock(budget)
    )
    results["gan_at_diffusion_cpu"]["budget_cpu_s"] = budget
    samples, _ = gan_samples(gan_long_cli.model, EVAL_SAMPLES)
    results["gan_at_diffusion_cpu"]["quality"] = quality(samples, datamodule)
    save(results)

    # 7. the diffusion model at the GAN quickstart's training CPU (the copy kept in stage 2)
    if diffusion_clock.snapshot is not None:
        model = copy.deepcopy(diffusion_cli.model)
        model.load_state_dict(diffusion_clock.snapshot)
        images = diffusion_samples(model, per_class, GUIDANCES[0])
        labels = torch.arange(CLASSES).repeat_interleave(per_class)
        results["diffusion_at_gan_cpu"] = {
            "budget_cpu_s": results["gan"]["training_cpu_s"],
            "batches": diffusion_clock.snapshot_batches,
            "quality": quality(images, datamodule),
            "recognised": round(100.0 * float((predict(classifier, images) == labels).float().mean()), 2),
        }
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    save(results)
    return results


def follow_up(class_check_dir: Path) -> dict:
    """Stage 8, after the run: the class check at ``MORE_GUIDANCES`` on the same checkpoint, and the samples of
    every class check (in ``class_check_dir``, written by stage 4) judged by classifiers of other seeds."""
    from lit_gen.checkpoints import load_datamodule, load_model

    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text())
    ckpt = str(Path(results["diffusion"]["run_dir"]) / "checkpoints" / "last.ckpt")
    datamodule = load_datamodule(load_model(ckpt)[1])
    datamodule.setup("fit")
    classifiers = {seed: train_classifier(datamodule, CLASSIFIER_EPOCHS, seed) for seed in CLASSIFIER_SEEDS}
    done = {check["guidance"] for check in results["class_check"]}
    for weight in MORE_GUIDANCES:
        if weight not in done:
            check = class_check(ckpt, classifiers[0][0], weight, MORE_PER_CLASS, class_check_dir)
            check.pop("samples")
            results["class_check"].append(check)
    recognised = {}
    for check in results["class_check"]:
        folder = class_check_dir / f"w{check['guidance']}"
        images = torch.cat([torch.load(folder / str(k) / "samples.pt") for k in range(CLASSES)])
        labels = torch.arange(CLASSES).repeat_interleave(len(images) // CLASSES)
        recognised[str(check["guidance"])] = {
            str(seed): round(100.0 * float((predict(model, images) == labels).float().mean()), 2)
            for seed, (model, _) in classifiers.items()
        }
    # the same-embedding scores against the guidance weight, on the first MORE_PER_CLASS samples of each class
    # (the same initial noise at every weight: ``sample`` draws it first, from the seed 100 + K)
    datamodule.setup("fit")
    results["guidance_quality"] = {}
    for check in results["class_check"]:
        if check["per_class"] >= MORE_PER_CLASS:
            folder = class_check_dir / f"w{check['guidance']}"
            images = [torch.load(folder / str(k) / "samples.pt")[:MORE_PER_CLASS] for k in range(CLASSES)]
            results["guidance_quality"][str(check["guidance"])] = quality(torch.cat(images), datamodule)
    results["classifier_seeds"] = {
        "test_accuracy": {str(seed): info["test_accuracy"] for seed, (_, info) in classifiers.items()},
        "recognised": recognised,
    }
    save(results)
    return results


# --- tables ------------------------------------------------------------------------------------------------------


def cost_table(results: dict) -> str:
    lines = [
        "| config | batches | fit CPU s | setup / training / monitoring CPU s | + interpreter start CPU s "
        "| total CPU (min) | wall s | load average (1 min) before / after |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for name in ("diffusion", "gan"):
        r = results.get(name)
        if r is None:
            continue
        total = r["fit_cpu_s"] + results["startup_cpu_s"]
        lines.append(
            f"| `configs/{name}.yaml` | {r['batches']} | {r['fit_cpu_s']:.0f} "
            f"| {r['setup_cpu_s']:.0f} / {r['training_cpu_s']:.0f} / {r['monitoring_cpu_s']:.0f} "
            f"| {results['startup_cpu_s']:.0f} | {total / 60:.1f} | {r['fit_wall_s']:.0f} "
            f"| {r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def class_table(results: dict) -> str:
    head = " | ".join(str(k) for k in range(CLASSES))
    lines = [
        f"| guidance | samples per class | {head} | overall | worst | ≥ {TARGET_RECOGNISED:.0f} % |",
        "|---|---:|" + "---:|" * CLASSES + "---:|---:|---|",
    ]
    for check in sorted(results.get("class_check", []), key=lambda c: -c["guidance"]):
        cells = " | ".join(f"{check['recognised'][str(k)]:.0f}" for k in range(CLASSES))
        control = check["guidance"] == 0
        verdict = "(control)" if control else ("met" if check["overall"] >= TARGET_RECOGNISED else "NOT met")
        lines.append(
            f"| {check['guidance']:g} | {check['per_class']} | {cells} | {check['overall']:.1f} "
            f"| {check['worst']:.0f} | {verdict} |"
        )
    return "\n".join(lines)


QUALITY_COLUMNS = ("fd_random", "precision_random", "recall_random", "density_random", "coverage_random")


def quality_table(results: dict) -> str:
    rows = [
        ("GAN quickstart as shipped", results.get("gan")),
        ("GAN for the diffusion quickstart's training CPU", results.get("gan_at_diffusion_cpu")),
        ("diffusion quickstart as shipped (guidance 1.5)", results.get("diffusion")),
        ("diffusion at the GAN quickstart's training CPU", results.get("diffusion_at_gan_cpu")),
        ("held-out real digits (180)", results.get("real_heldout")),
    ]
    names = " | ".join(QUALITY_COLUMNS + ("kd_random",))
    lines = [
        f"| model | batches | training CPU s | samples | {names} | sampling CPU ms / sample |",
        "|---|---:|---:|---:|" + "---:|" * (len(QUALITY_COLUMNS) + 2),
    ]
    for label, r in rows:
        if r is None or "quality" not in r:
            continue
        q = r["quality"]
        cells = " | ".join(f"{q[c]:.3f}" for c in QUALITY_COLUMNS) + f" | {q['kd_random']:.4f}"
        cpu = r.get("training_cpu_s", r.get("budget_cpu_s"))
        per_sample = r.get("sampling_cpu_s_per_sample")
        lines.append(
            f"| {label} | {r.get('batches', '-')} | {'-' if cpu is None else f'{cpu:.0f}'} | {q['num_fake']} "
            f"| {cells} | {'-' if per_sample is None else f'{1000 * per_sample:.1f}'} |"
        )
    return "\n".join(lines)


def classifier_seed_table(results: dict) -> str:
    seeds = results.get("classifier_seeds")
    if seeds is None:
        return ""
    names = sorted(seeds["test_accuracy"], key=int)
    lines = [
        "| | " + " | ".join(f"classifier seed {s}" for s in names) + " |",
        "|---|" + "---:|" * len(names),
        "| test accuracy (180 held-out real digits) | "
        + " | ".join(f"{seeds['test_accuracy'][s]:.1f}" for s in names)
        + " |",
    ]
    for weight, row in sorted(seeds["recognised"].items(), key=lambda item: -float(item[0])):
        lines.append(
            f"| recognised, guidance {float(weight):g} | " + " | ".join(f"{row[s]:.1f}" for s in names) + " |"
        )
    text = "\n\nThe same samples judged by classifiers of three seeds (%):\n\n" + "\n".join(lines)
    by_weight = results.get("guidance_quality")
    if by_weight:
        rows = [
            f"| {float(w):g} | {q['num_fake']} | " + " | ".join(f"{q[c]:.3f}" for c in QUALITY_COLUMNS) + " |"
            for w, q in sorted(by_weight.items(), key=lambda item: -float(item[0]))
        ]
        text += (
            f"\n\nSame-embedding scores against the guidance weight ({MORE_PER_CLASS} per class, the same noise):"
            f"\n\n| guidance | samples | {' | '.join(QUALITY_COLUMNS)} |\n|---:|---:|"
            + "---:|" * len(QUALITY_COLUMNS)
            + "\n"
            + "\n".join(rows)
        )
    return text


def tables(results: dict) -> str:
    return (
        f"Cost of the quickstarts:\n\n{cost_table(results)}\n\n"
        f"Class check (share of `sample --labels K` samples the classifier calls K, %):\n\n"
        f"{class_table(results)}{classifier_seed_table(results)}\n\n"
        f"Same embedding, same real digits:\n\n{quality_table(results)}"
    )


def write_readme_tables(results: dict) -> None:
    """Replaces the text between the RESULTS markers of README.md with the tables."""
    readme = HERE / "README.md"
    begin, end = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"
    head, _, rest = readme.read_text().partition(begin)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{begin}\n{tables(results)}\n{end}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="only rewrite README.md's tables from results")
    parser.add_argument("--quick", action="store_true", help="smoke test: 40 optimizer steps, 10 per class")
    parser.add_argument("--run-root", default=None, help="where run directories go (default: a temp dir)")
    parser.add_argument(
        "--follow-up",
        type=Path,
        default=None,
        metavar="DIR",
        help="stage 8 on the class check samples in DIR",
    )
    args = parser.parse_args(argv)
    global RESULTS
    if args.quick:
        RESULTS = Path(tempfile.mkdtemp(prefix="diffusion_digits-quick-")) / "results.json"
    if args.follow_up is not None:
        follow_up(args.follow_up)
    elif not args.table:
        run(args.quick, args.run_root or tempfile.mkdtemp(prefix="diffusion_digits-"))
    results = json.loads(RESULTS.read_text())
    if not args.quick:
        write_readme_tables(results)
    print(tables(results))


if __name__ == "__main__":
    main()
