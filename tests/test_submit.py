"""``python -m lit_gen submit`` without a cluster: the script it renders from the run's config (job shape,
Lightning's SLURM rules, arrays, sweeps), ``--dry-run``, the files it writes, and one-line errors when sbatch
is missing or rejects the script (a stand-in ``sbatch`` on PATH plays the cluster). The real cluster is in
``tests/test_slurm.py``; the sbatch templates under ``slurm/`` (the hand-edited ones and the two submit
fills in) are checked here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from helpers.paths import ROOT

TINY = ROOT / "tests" / "slurm" / "tiny_gan.yaml"
GAN = ROOT / "configs" / "gan.yaml"


def fake_sbatch(directory: Path, body: str) -> Path:
    """An executable ``sbatch`` in ``directory`` that records its arguments and runs ``body``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "sbatch"
    script.write_text(f'#!/bin/bash\necho "$@" > {directory}/args\n{body}\n')
    script.chmod(0o755)
    return script


def directives(script: str) -> dict[str, str]:
    """``#SBATCH --key=value`` lines as a dict (comments stripped)."""
    found = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            option = line[len("#SBATCH --") :].split("#")[0].strip()
            key, _, value = option.partition("=")
            found[key] = value
    return found


def test_dry_run_takes_the_job_shape_from_the_trainer_section_and_writes_nothing(cli, tmp_path):
    code, out, err = cli(
        "submit", "--config", GAN, "--trainer.accelerator", "gpu", "--trainer.devices", "4",
        "--trainer.num_nodes", "2", "--slurm.partition", "gpu", "--slurm.time", "1-00:00:00",
        "--slurm.account", "lab", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    found = directives(out)
    assert found["nodes"] == "2" and found["ntasks-per-node"] == "4" and found["gpus-per-node"] == "4"
    assert found["partition"] == "gpu" and found["time"] == "1-00:00:00" and found["account"] == "lab"
    assert found["signal"] == "SIGUSR1@90" and "requeue" in found and found["open-mode"] == "append"
    run_dir = Path(found["output"]).parent
    assert run_dir.parent == tmp_path / "runs" / "gan" and found["output"].endswith("slurm-%j.out")
    srun = [line for line in out.splitlines() if line.startswith("exec srun ")]
    assert len(srun) == 1 and " -m lit_gen fit --config " in srun[0]
    assert f"--config {run_dir}/config.yaml --run.dir" in srun[0]
    assert not (tmp_path / "runs").exists()
    subprocess.run(["bash", "-n"], input=out, text=True, check=True)


@pytest.mark.parametrize(
    ("args", "shape"),
    [
        (["--trainer.accelerator", "cpu", "--trainer.devices", "2"], ("2", None)),
        (["--trainer.accelerator", "cpu", "--trainer.devices", "auto"], ("1", None)),
        (["--trainer.devices", "auto", "--slurm.gpus", "8"], ("8", "8")),
        (["--trainer.devices", "[0, 1]"], ("2", "2")),
        (["--trainer.devices", "3", "--slurm.gpus", "0"], ("3", None)),
    ],
)
def test_devices_resolve_to_tasks_and_gpus(cli, args, shape):
    code, out, err = cli("submit", "--config", GAN, *args, "--dry-run")
    assert code == 0, err
    found = directives(out)
    assert (found["ntasks-per-node"], found.get("gpus-per-node")) == shape


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.devices", "auto"], "trainer.devices: 'auto' cannot be resolved"),
        (["--trainer.devices", "4", "--slurm.gpus", "2"], "slurm.gpus: 2 disagrees with trainer.devices 4"),
        (["--trainer.accelerator", "cpu", "--slurm.gpus", "2"], "trainer.accelerator is 'cpu'"),
        (["--slurm.job_name", "interactive"], "slurm.job_name: 'interactive'"),
        (["--array", "0"], "array: must be a positive number"),
        (["--sweep", "me/proj/abc"], "sweep: needs --array N"),
        (["--slurm.partiton", "x"], "slurm.partiton"),
    ],
)
def test_inconsistent_options_are_one_line_errors(cli, args, message, tmp_path):
    code, out, err = cli("submit", "--config", GAN, *args, "--dry-run")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lit_gen: error:") and message in lines[0], err
    assert not (tmp_path / "runs").exists()


def test_a_config_error_is_reported_as_in_fit(cli):
    code, _, err = cli("submit", "--config", GAN, "--trainer.max_stepz", "3", "--dry-run")
    assert code == 2 and "max_stepz" in err and len(err.strip().splitlines()) == 1


def test_array_runs_one_directory_and_seed_per_task(cli):
    code, out, err = cli(
        "submit", "--config", GAN, "--trainer.accelerator", "cpu", "--array", "3", "--dry-run"
    )
    assert code == 0, err
    found = directives(out)
    assert found["array"] == "0-2" and found["output"].endswith("slurm-%A_%a.out")
    assert '/task-"$SLURM_ARRAY_TASK_ID"' in out
    assert '--seed_everything "$((0 + SLURM_ARRAY_TASK_ID))"' in out  # gan.yaml: seed_everything 0
    subprocess.run(["bash", "-n"], input=out, text=True, check=True)


def test_sweep_runs_one_wandb_agent_per_array_task_without_requeue(cli):
    code, out, err = cli(
        "submit", "--config", GAN, "--slurm.gpus", "0", "--array", "4", "--sweep", "me/proj/abc123", "--dry-run"
    )  # fmt: skip
    assert code == 0, err
    found = directives(out)
    assert found["array"] == "0-3" and "no-requeue" in found and "signal" not in found
    assert out.rstrip().endswith("-m wandb agent --count 1 me/proj/abc123")


def test_sweep_runs_start_the_configured_python(cli, tmp_path):
    """The agent starts each sweep run as W&B's ``${env} ${interpreter}``, i.e. ``/usr/bin/env python``: that
    must be ``--slurm.python``, not a ``python`` earlier on the job's PATH (one without torch, say)."""
    path_bin, configured = tmp_path / "path_bin", tmp_path / "venv" / "bin" / "python"
    stubs = {
        path_bin / "srun": 'exec "$@"',
        path_bin / "python": "echo wrong python",
        # the configured Python plays the agent for `-m wandb agent`, and the sweep run otherwise
        configured: 'if [ "$2" = wandb ]; then exec /usr/bin/env python -m lit_gen fit --x=1; fi\n'
        'echo "configured python: $*"',
    }
    for stub, body in stubs.items():
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(f"#!/bin/bash\n{body}\n")
        stub.chmod(0o755)
    code, out, err = cli(
        "submit", "--config", TINY, "--array", "2", "--sweep", "me/proj/abc123", "--dry-run",
        "--slurm.python", configured
    )  # fmt: skip
    assert code == 0, err
    env = {"PATH": f"{path_bin}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "1"}
    job = subprocess.run(["bash", "-c", out], capture_output=True, text=True, env=env)
    assert job.returncode == 0, job.stderr
    assert job.stdout.strip() == "configured python: -m lit_gen fit --x=1"

    # a --slurm.python the job's node does not have: one line in the job's output
    code, out, err = cli(
        "submit", "--config", TINY, "--array", "2", "--sweep", "me/proj/abc123", "--dry-run",
        "--slurm.python", tmp_path / "nowhere" / "python"
    )  # fmt: skip
    job = subprocess.run(["bash", "-c", out], capture_output=True, text=True, env=env)
    assert job.returncode == 2 and job.stdout == ""
    assert job.stderr.startswith(
        f"lit_gen: error: slurm.python: '{tmp_path / 'nowhere' / 'python'}' not found"
    )


@pytest.mark.parametrize("override", [["--trainer.max_steps=3"], ["--run.name", "x"]])
def test_sweep_refuses_fit_overrides_it_would_drop(cli, override):
    code, out, err = cli(
        "submit", "--config", TINY, *override, "--array", "2", "--sweep", "me/proj/abc123", "--dry-run"
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"lit_gen: error: sweep: '{override[0]}' would not reach the sweep's runs (each runs the sweep's "
        "command): put it in the sweep's command or parameters; submit --sweep takes only --config"
    ]


def test_sbatch_missing_is_one_line_and_writes_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no_bin"))
    code, _, err = cli("submit", "--config", TINY)
    assert code == 2
    assert err.strip() == (
        "lit_gen: error: sbatch: not found on PATH (run submit on a SLURM login node, or use --dry-run)"
    )
    assert not (tmp_path / "runs").exists()


def test_sbatch_rejecting_is_one_line_and_removes_the_run_directory(cli, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_sbatch(bin_dir, 'echo "sbatch: error: Batch job submission failed: Invalid account" >&2\nexit 1')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    code, out, err = cli("submit", "--config", TINY)
    assert code == 2
    assert err.strip() == (
        "lit_gen: error: sbatch rejected submit.sbatch: sbatch: error: Batch job submission failed: Invalid account"
    )
    assert (bin_dir / "args").exists()  # it was called
    assert not (tmp_path / "runs").exists()


def test_resubmitting_a_run_keeps_its_files_when_sbatch_rejects(cli, tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("previous: true\n")
    bin_dir = tmp_path / "bin"
    fake_sbatch(bin_dir, "exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    code, _, err = cli("submit", "--config", TINY, "--run.dir", run_dir)
    assert code == 2 and "exit status 1" in err
    assert (run_dir / "config.yaml").read_text() == "previous: true\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.yaml"]


def test_submit_writes_script_and_resolved_config_into_the_run_directory(cli, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_sbatch(bin_dir, 'echo "4242;cluster"')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    code, out, err = cli(
        "submit", "--config", TINY, "--trainer.max_steps", "8", "--ckpt_path", "last",
        "--slurm.setup", json.dumps(["module load cuda", "source venv/bin/activate"]),
        "--slurm.sbatch", json.dumps(["--qos=high"]),
    )  # fmt: skip
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "tiny_gan").iterdir()
    assert "submitted job 4242" in out and str(run_dir) in out
    assert (bin_dir / "args").read_text().split() == ["--parsable", str(run_dir / "submit.sbatch")]
    assert (run_dir / "slurm_job_id").read_text() == "4242\n"
    script = (run_dir / "submit.sbatch").read_text()
    assert "#SBATCH --qos=high" in script
    assert script.index("module load cuda\nsource venv/bin/activate") < script.index("srun ")
    assert "else\n    CKPT=last\nfi" in script  # the first start; a restart resumes from its own checkpoints
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["max_steps"] == 8 and config["trainer"]["devices"] == 1
    assert config["run"]["dir"] == str(run_dir) and config["ckpt_path"] is None


def test_resume_choice_in_the_script(cli, tmp_path):
    """The script's resume rule, run with bash: the first start takes the submitted ``--ckpt_path``; a restart,
    or a run that was requeued before (it has an hpc checkpoint), resumes with ``last``, which the CLI resolves
    to the run's checkpoint with the most training progress (tests/test_resume.py)."""
    run_dir, init = tmp_path / "run", tmp_path / "init.ckpt"
    torch.save({"state_dict": {}}, init)  # e.g. weights to start from
    code, out, err = cli("submit", "--config", TINY, "--run.dir", run_dir, "--ckpt_path", init, "--dry-run")
    assert code == 0, err
    body = out[out.index("RUN_DIR=") : out.index("exec srun ")] + 'echo "$CKPT"\n'

    def choice(restarts: str = "0") -> str:
        env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": restarts}
        result = subprocess.run(["bash", "-c", body], capture_output=True, text=True, env=env)
        return result.stdout.split()[-1]

    assert choice() == str(init)
    assert choice("1") == str(init)  # requeued before it saved anything (e.g. a node failure)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_text("")
    assert choice() == str(init)  # a new start in the run directory: as submitted
    assert choice("1") == "last"
    (run_dir / "hpc_ckpt_1.ckpt").write_text("")
    assert choice() == "last"  # a time-limited run submitted again
    # the mtimes of the checkpoints no longer matter: --ckpt_path last compares their training progress
    subprocess.run(["touch", "-d", "1 hour ago", str(run_dir / "checkpoints" / "last.ckpt")], check=True)
    assert choice("2") == "last"


def test_the_batch_shell_hands_its_signals_to_srun(cli):
    """``scancel --batch -s USR1`` signals only the batch shell, which has no trap: it must be srun."""
    code, out, _ = cli("submit", "--config", TINY, "--dry-run")
    assert code == 0
    assert out.rstrip().splitlines()[-1].startswith("exec srun ")
    for name in ("single_node.sbatch", "multi_node.sbatch"):
        assert 'exec srun "$PYTHON" -m lit_gen fit' in (ROOT / "slurm" / name).read_text()


@pytest.mark.parametrize("name", ["single_node.sbatch", "multi_node.sbatch", "wandb_agent_array.sbatch"])
def test_templates_follow_lightnings_slurm_rules(name):
    text = (ROOT / "slurm" / name).read_text()
    subprocess.run(["bash", "-n", str(ROOT / "slurm" / name)], check=True)
    found = directives(text)
    assert {"partition", "account", "time", "gpus-per-node", "ntasks-per-node", "nodes"} <= found.keys()
    assert found["open-mode"] == "append" and "EDIT" in text
    if name == "wandb_agent_array.sbatch":
        assert "no-requeue" in found and "wandb agent --count 1" in text
        return
    assert found["signal"] == "SIGUSR1@90" and "requeue" in found
    assert 'srun "$PYTHON" -m lit_gen fit' in text
    assert '--trainer.devices "$SLURM_NTASKS_PER_NODE" --trainer.num_nodes "$SLURM_JOB_NUM_NODES"' in text


@pytest.mark.parametrize("kind", ["fit", "sweep"])
def test_the_script_templates_are_filled_completely(cli, kind):
    """``slurm/submit_{fit,sweep}.sbatch.template``: every ``${name}`` is replaced, bash's own variables are
    left as they are."""
    extra = ["--array", "2", "--sweep", "me/proj/abc123"] if kind == "sweep" else []
    code, out, err = cli("submit", "--config", TINY, *extra, "--dry-run")
    assert code == 0, err
    assert not re.search(r"\$\{[a-z]", out), out
    assert '"$RUN_DIR' in out if kind == "fit" else 'exec %q "$@"' in out
    template = (ROOT / "slurm" / f"submit_{kind}.sbatch.template").read_text()
    assert out.splitlines()[:2] == template.splitlines()[:2]


def test_a_missing_script_template_is_one_line(cli, monkeypatch, tmp_path):
    monkeypatch.setattr("lit_gen.commands.submit.TEMPLATES", tmp_path / "nowhere")
    code, out, err = cli("submit", "--config", TINY, "--dry-run")
    assert code == 2 and out == ""
    assert err.startswith(f"lit_gen: error: submit: cannot read the job script template '{tmp_path}/nowhere/")
    assert len(err.strip().splitlines()) == 1
