"""``python -m lit_gen submit``: run a ``fit`` config as a SLURM batch job.

``submit --config X.yaml [fit overrides] [--slurm.partition P --slurm.time T --slurm.gpus G ...]
[--array N | --sweep ID] [--dry-run]`` parses the fit command line exactly as ``fit`` would, creates the run
directory on the login node (``{run.root}/{run.name}/{YYYYmmdd-HHMMSS}``, or the config's ``run.dir`` when
re-submitting a run), writes the resolved ``config.yaml`` and the batch script ``submit.sbatch`` into it and
calls ``sbatch``. The script runs ``srun python -m lit_gen fit --config <run dir>/config.yaml --run.dir
<run dir>``, so the job, and every restart of it after a requeue, works in exactly that directory: SLURM's
output (``slurm-<job id>.out``, appended to across restarts), Lightning's ``hpc_ckpt_N.ckpt`` on preemption,
``checkpoints/``, ``samples/`` and the loggers' files. (A job started from a hand-written script without
``--run.dir`` gets ``{run.root}/{run.name}/slurm-<job id>`` instead.)

The job's shape comes from the config's trainer section, so Lightning and SLURM cannot disagree:
``--nodes`` = ``trainer.num_nodes``, ``--ntasks-per-node`` = ``trainer.devices`` (one process per device,
started by ``srun``), ``--gpus-per-node`` = ``trainer.devices`` unless ``trainer.accelerator`` is ``cpu``.
``devices: auto`` cannot be resolved on a login node without GPUs: it takes ``--slurm.gpus`` (written into the
job's config as the device count), or 1 on the CPU.

``--array N`` runs N copies as a job array, task ``i`` in ``<run dir>/task-<i>`` with seed
``seed_everything + i``. ``--sweep ENTITY/PROJECT/SWEEP_ID`` (with ``--array N``) runs one ``wandb agent
--count 1`` per array task instead, with ``--slurm.python`` as the ``python`` its sweep runs start; those runs
are not requeued (a restarted agent would fetch a different sweep run). The runs take their arguments from the
sweep, so submit refuses fit arguments other than ``--config`` (whose trainer section shapes the job).
``--dry-run`` prints the script and writes nothing.
"""

from __future__ import annotations

import shlex
import shutil
import string
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.cli import LightningArgumentParser

from lit_gen.cli import LitGenCLI
from lit_gen.errors import LitGenError
from lit_gen.run_dir import RunDir, next_run_dir, run_name

SCRIPT_NAME = "submit.sbatch"
CONFIG_NAME = "config.yaml"
JOB_ID_NAME = "slurm_job_id"


@dataclass
class SlurmOptions:
    """The cluster-specific part of a job (``--slurm.*``); the job's shape comes from the trainer section.

    Args:
        partition: ``--partition`` (default: the cluster's default partition).
        account: ``--account`` to charge.
        time: ``--time`` limit, e.g. ``"1-00:00:00"`` or ``"04:00:00"`` (default: the partition's).
        gpus: GPUs per node; needed only when ``trainer.devices`` is ``auto``. 0 runs on CPUs.
        cpus_per_task: ``--cpus-per-task`` (CPU cores per process: data-loading workers + 1).
        mem: ``--mem`` per node, e.g. ``"64G"``.
        job_name: ``--job-name`` (default: ``lit_gen-<run name>``). Never ``bash``/``interactive``: Lightning
            treats such jobs as interactive sessions and turns its SLURM support off.
        signal_seconds: SIGUSR1 is sent this many seconds before the time limit (``--signal=SIGUSR1@N``);
            Lightning then saves ``hpc_ckpt_N.ckpt`` and requeues the job.
        sbatch: more ``#SBATCH`` options, verbatim, e.g. ``["--qos=high", "--constraint=a100"]``.
        setup: shell lines run before training, e.g. ``--slurm.setup+="module load cuda/12.4"
            --slurm.setup+="source ~/venv/bin/activate"`` (default: none; the job inherits the submitting
            shell's environment and runs this Python).
        python: the Python that runs lit_gen in the job (default: the one running ``submit``).
    """

    partition: str | None = None
    account: str | None = None
    time: str | None = None
    gpus: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    job_name: str | None = None
    signal_seconds: int = 90
    sbatch: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    python: str | None = None


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_gen submit", exit_on_error=False, description=__doc__)
    parser.add_class_arguments(SlurmOptions, "slurm")
    parser.add_argument("--array", type=int | None, default=None, help="Run N array tasks.")
    parser.add_argument("--sweep", type=str | None, default=None, help="W&B sweep id: one agent per task.")
    parser.add_argument("--dry_run", type=bool, default=False, help="Print the script, write nothing.")
    return parser


#: submit's own options; every other argument belongs to the fit command line
_OWN_FLAGS = ("--array", "--sweep", "--dry-run", "--dry_run")


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(submit's arguments, fit's arguments). ``--dry-run`` is a flag; the others take a value."""
    own, fit = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in ("--dry-run", "--dry_run"):
            own.append("--dry_run=" + (arg.split("=", 1)[1] if "=" in arg else "true"))
        elif name.startswith("--slurm.") or name in _OWN_FLAGS:
            own.append(arg)
            if "=" not in arg and i + 1 < len(argv):
                own.append(argv[i + 1])
                i += 1
        else:
            fit.append(arg)
        i += 1
    return own, fit


class _FitConfigParsed(Exception):
    """Carries the fit parser and the parsed fit config out of ``_ParseFitOnly``."""

    def __init__(self, parser: ArgumentParser, config: Namespace) -> None:
        super().__init__("parsed")
        self.parser, self.config = parser, config


class _ParseFitOnly(LitGenCLI):
    """Parses a ``fit`` command line exactly as ``fit`` does, then stops: before seeding the global RNGs (the
    job seeds itself), choosing a run directory or instantiating anything."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": LitGenCLI.subcommands()["fit"]}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        self.fit_parser = parser  # the only subcommand's parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        raise _FitConfigParsed(self.fit_parser, self.config["fit"])


def resolve_fit_config(fit_args: list[str]) -> tuple[ArgumentParser, Namespace]:
    """The fit parser and the resolved fit config of a command line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        try:
            _ParseFitOnly(args=["fit", *fit_args])
        except _FitConfigParsed as parsed:
            return parsed.parser, parsed.config
    raise AssertionError("unreachable: _ParseFitOnly stops after parsing")


# --- job shape ---------------------------------------------------------------------------------------------


def count_devices(devices: object) -> int | None:
    """How many devices ``trainer.devices`` asks for; None for ``auto`` / ``-1`` (all the node has)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return None
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise LitGenError(f"trainer.devices: cannot run '{devices}' as SLURM tasks; use a positive integer")


@dataclass
class JobShape:
    """``--nodes``, ``--ntasks-per-node`` (= processes = devices per node) and ``--gpus-per-node``."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int


def job_shape(trainer: Namespace, gpus: int | None) -> JobShape:
    """The job's shape from the trainer section, with ``--slurm.gpus`` resolving ``devices: auto``."""
    accelerator = trainer.get("accelerator", "auto")
    accelerator = accelerator if isinstance(accelerator, str) else "auto"
    devices = count_devices(trainer.get("devices", "auto"))
    nodes = trainer.get("num_nodes", 1)
    if not isinstance(nodes, int) or nodes < 1:
        raise LitGenError(f"trainer.num_nodes: must be a positive integer, got {nodes!r}")
    if gpus is not None and gpus < 0:
        raise LitGenError(f"slurm.gpus: must be >= 0, got {gpus}")
    if accelerator == "cpu":
        if gpus:
            raise LitGenError(f"slurm.gpus: {gpus} GPUs requested but trainer.accelerator is 'cpu'")
        return JobShape(nodes, devices or 1, 0)
    if gpus == 0:
        if accelerator in ("gpu", "cuda"):
            raise LitGenError(f"slurm.gpus: 0 GPUs requested but trainer.accelerator is '{accelerator}'")
        return JobShape(nodes, devices or 1, 0)
    if devices is None:
        if gpus is None:
            raise LitGenError(
                "trainer.devices: 'auto' cannot be resolved on the login node; "
                "set --trainer.devices N or --slurm.gpus N (GPUs per node)"
            )
        devices = gpus
    elif gpus is not None and gpus != devices:
        raise LitGenError(
            f"slurm.gpus: {gpus} disagrees with trainer.devices {devices} (one process per GPU)"
        )
    return JobShape(nodes, devices, devices)


# --- the script --------------------------------------------------------------------------------------------

#: the job scripts' templates (in the repository's ``slurm/``, next to the hand-edited ones)
TEMPLATES = Path(__file__).resolve().parents[2] / "slurm"


class ScriptTemplate(string.Template):
    """``${name}`` placeholders in lower case; bash's own ``$VAR``, ``${VAR:-x}``, ``$(...)`` and ``"$@"`` are
    left alone (``$$`` writes a ``$``)."""

    pattern = r"""
        \$(?:
          (?P<escaped>\$) |
          (?P<named>(?!)) |
          {(?P<braced>[a-z][a-z0-9_]*)} |
          (?P<invalid>(?!))
        )"""
    flags = 0  # case-sensitive: bash's variables are in upper case


def fill(template: Path, values: dict[str, str]) -> str:
    """``template`` with its placeholders replaced by ``values``; a line that holds only a placeholder whose
    value is empty is left out (options that are not set)."""
    try:
        text = template.read_text()
    except OSError as err:
        raise LitGenError(
            f"submit: cannot read the job script template '{template}' ({err.strerror or err}); "
            "submit runs from a lit_gen checkout (pip install -e .)"
        ) from None
    empty = {f"${{{key}}}" for key, value in values.items() if not value}
    lines = [line for line in text.splitlines(keepends=True) if line.strip() not in empty]
    return ScriptTemplate("".join(lines)).substitute(values)


def job_script(
    args: Namespace, slurm: SlurmOptions, shape: JobShape, config: Namespace, run_dir: Path
) -> str:
    """The batch script of the job in ``run_dir``: ``slurm/submit_fit.sbatch.template``, or
    ``slurm/submit_sweep.sbatch.template`` for one W&B agent per array task. Sets the config's ``run.dir`` and
    ``ckpt_path`` as the job reads them: an array's tasks each get their own directory, and the submitted
    ``ckpt_path`` is for the first start only (a restart resumes from the run's own checkpoint)."""
    config.run.dir = str(run_dir) if not args.array else None
    ckpt_path, config.ckpt_path = config.get("ckpt_path"), None
    q = shlex.quote
    resources = {
        "gpus-per-node": shape.gpus_per_node or None,
        "cpus-per-task": slurm.cpus_per_task,
        "mem": slurm.mem,
        "time": slurm.time,
        "partition": slurm.partition,
        "account": slurm.account,
    }
    array = [f"--array=0-{args.array - 1}"] if args.array else []
    values = {
        "job_name": slurm.job_name or f"lit_gen-{run_dir.parent.name}",
        "nodes": str(shape.nodes),
        "tasks_per_node": str(shape.tasks_per_node),
        "resources": "\n".join(f"#SBATCH --{k}={v}" for k, v in resources.items() if v is not None),
        "output": str(run_dir / ("slurm-%A_%a.out" if args.array else "slurm-%j.out")),
        "workdir": str(Path.cwd()),
        "more_options": "\n".join(f"#SBATCH {option}" for option in [*array, *slurm.sbatch]),
        "setup": "\n".join(slurm.setup),
    }
    python = q(slurm.python or sys.executable)
    if args.sweep:
        values.update(python=python, bin=q(str(run_dir / "bin")), sweep=q(args.sweep))
        return fill(TEMPLATES / "submit_sweep.sbatch.template", values)
    fit = [
        python,
        "-m",
        "lit_gen",
        "fit",
        "--config",
        q(str(run_dir / CONFIG_NAME)),
        "--run.dir",
        '"$RUN_DIR"',
    ]
    seed = config.get("seed_everything")
    if args.array and isinstance(seed, int) and not isinstance(seed, bool):
        fit += ["--seed_everything", f'"$(({seed} + SLURM_ARRAY_TASK_ID))"']
    checkpoint_dir = None if args.array else config.checkpoint.dirpath
    values.update(
        signal_seconds=str(slurm.signal_seconds),
        run_dir=q(str(run_dir)) + ('/task-"$SLURM_ARRAY_TASK_ID"' if args.array else ""),
        checkpoint_dir=q(str(checkpoint_dir)) if checkpoint_dir else '"$RUN_DIR/checkpoints"',
        first_ckpt_path=q(ckpt_path) if ckpt_path else "null",
        fit=" ".join(fit),
    )
    return fill(TEMPLATES / "submit_fit.sbatch.template", values)


# --- the command -------------------------------------------------------------------------------------------


def sbatch(script: Path, workdir: Path) -> str:
    """Submits ``script``; returns the job id. A rejection becomes a one-line LitGenError."""
    result = subprocess.run(
        ["sbatch", "--parsable", str(script)], capture_output=True, text=True, cwd=workdir, timeout=120
    )
    if result.returncode != 0:
        message = " ".join((result.stderr or result.stdout).split()) or f"exit status {result.returncode}"
        raise LitGenError(f"sbatch rejected {script.name}: {message}")
    job_id = result.stdout.strip().split(";")[0]
    if not job_id:
        raise LitGenError(f"sbatch printed no job id for {script.name}")
    return job_id


def main(argv: list[str]) -> None:
    if any(arg in ("-h", "--help") for arg in argv):
        build_parser().print_help()
        print("\nAll other arguments are fit's: see `python -m lit_gen fit --help`.")
        return
    own_args, fit_args = split_argv(argv)
    args = build_parser().parse_args(own_args)
    slurm = SlurmOptions(**vars(args.slurm))
    if args.array is not None and args.array < 1:
        raise LitGenError(f"array: must be a positive number of tasks, got {args.array}")
    if args.sweep and not args.array:
        raise LitGenError("sweep: needs --array N (one agent per array task)")
    if not args.dry_run and shutil.which("sbatch") is None:
        raise LitGenError("sbatch: not found on PATH (run submit on a SLURM login node, or use --dry-run)")
    if not any(a.split("=", 1)[0] == "--config" for a in fit_args):
        raise LitGenError("config: submit needs --config X.yaml (the run's config)")
    if args.sweep:
        refuse_sweep_overrides(fit_args)

    if slurm.job_name in ("bash", "interactive"):
        raise LitGenError(
            f"slurm.job_name: '{slurm.job_name}' makes Lightning ignore SLURM; choose another name"
        )

    parser, config = resolve_fit_config(fit_args)
    shape = job_shape(config.trainer, slurm.gpus)
    config.trainer.devices = shape.tasks_per_node  # explicit, so the job's Lightning agrees with SLURM
    chosen = Path(config.run.dir).absolute() if config.run.dir else None
    root, name = Path(config.run.root).absolute(), run_name(config)
    if args.dry_run:
        sys.stdout.write(job_script(args, slurm, shape, config, chosen or next_run_dir(root, name)))
        return
    run_dir = RunDir.take(chosen) if chosen else RunDir.claim(root, name)
    try:
        script = job_script(args, slurm, shape, config, run_dir.path)
        script_path, config_path = run_dir.path / SCRIPT_NAME, run_dir.path / CONFIG_NAME
        parser.save(config, str(config_path), skip_none=False, overwrite=True, multifile=False)
        script_path.write_text(script)
        job_id = sbatch(script_path, Path.cwd())
        (run_dir.path / JOB_ID_NAME).write_text(job_id + "\n")
    except BaseException:
        run_dir.restore()  # a new directory is removed, a re-submitted run's files are put back
        raise
    output = run_dir.path / (f"slurm-{job_id}_<task>.out" if args.array else f"slurm-{job_id}.out")
    print(f"lit_gen: submitted job {job_id}")
    print(f"  run directory: {run_dir.path}")
    print(f"  script:        {script_path}")
    print(f"  config:        {config_path}")
    print(f"  output:        {output}")
    print(f"  watch:         squeue -j {job_id}; tail -f {output}")


def refuse_sweep_overrides(fit_args: list[str]) -> None:
    """With ``--sweep`` each task runs the sweep's own command, so only ``--config`` (the job's shape) counts;
    any other fit argument would be dropped without a word."""
    i = 0
    while i < len(fit_args):
        if fit_args[i] == "--config":
            i += 2
        elif fit_args[i].startswith("--config="):
            i += 1
        else:
            raise LitGenError(
                f"sweep: '{fit_args[i]}' would not reach the sweep's runs (each runs the sweep's command): "
                "put it in the sweep's command or parameters; submit --sweep takes only --config"
            )
