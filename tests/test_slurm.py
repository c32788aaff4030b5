"""Against a real single-node SLURM cluster (tests marked ``slurm``, see ``tests/helpers/slurm.py``):
``submit`` runs a GAN fit to completion; a fit preempted with SIGUSR1 (sent to the batch shell only, or to
every process of the job) checkpoints, is requeued, resumes in the same run directory and W&B run and ends
bitwise equal to an uninterrupted run, with its CSV log and ``config.yaml`` as the uninterrupted run's; such a
run submitted again with ``--ckpt_path last`` resumes from its newest checkpoint; a 2-task ``srun`` DDP job from
``slurm/single_node.sbatch``; sbatch rejecting a script leaves nothing behind. Without a cluster: a requeue
signal arriving mid-batch is answered with a checkpoint at the end of that batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.paths import ROOT, TESTS
from helpers.runners import subprocess_env
from helpers.runs import differences, metrics_rows
from helpers.slurm import cancel, wait_for_file, wait_for_job

TINY = ROOT / "tests" / "slurm" / "tiny_gan.yaml"
GATE_BATCH = 20  # the preempted job is held (and signalled) at the end of this training batch
#: lines the job scripts run first: this checkout's lit_gen and the test helpers importable in jobs, one thread
#: per process
SETUP = [f"export PYTHONPATH={ROOT}:{TESTS}", "export OMP_NUM_THREADS=1"]


def submit(*args: str) -> tuple[int, str, str]:
    """``python -m lit_gen submit ARGS`` in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from lit_gen.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["submit", *map(str, args)])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def log_of(run_dir: Path, job_id: str) -> str:
    path = run_dir / f"slurm-{job_id}.out"
    return path.read_text(errors="replace") if path.exists() else f"(no {path})"


def final_state(run_dir: Path) -> dict:
    """Weights (with the EMA generator) and both optimizers' states at the end of the run."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 120
    return {"state_dict": checkpoint["state_dict"], "optimizer_states": checkpoint["optimizer_states"]}


@pytest.fixture(scope="module")
def gated_jobs(slurm_cluster, tmp_path_factory):
    """Submits the same tiny GAN fit three times, at once: run A (CSV log, released at once), run B (offline
    W&B and CSV logs) and run C (CSV log), both held at batch 20 until the test preempts them. Yields
    {name: (job id, run dir)}; cancels what is left at the end."""
    base = tmp_path_factory.mktemp("slurm_jobs")
    config = yaml.safe_load(TINY.read_text())
    config["trainer"]["callbacks"].append(
        {"class_path": "helpers.callbacks.Gate", "init_args": {"at_batch": GATE_BATCH}}
    )
    (base / "gated_gan.yaml").write_text(yaml.safe_dump(config))
    config["trainer"]["logger"] = [
        {"class_path": "lit_gen.loggers.OfflineFirstWandbLogger"},
        {"class_path": "lit_gen.loggers.ResumableCSVLogger", "init_args": {"name": "csv", "version": ""}},
    ]
    (base / "gated_gan_wandb.yaml").write_text(yaml.safe_dump(config))
    jobs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        for name, config_name in (("A", "gated_gan"), ("B", "gated_gan_wandb"), ("C", "gated_gan")):
            run_dir = base / name
            code, out, err = submit(
                "--config", base / f"{config_name}.yaml", "--run.dir", run_dir,
                "--slurm.time", "00:10:00", "--slurm.setup", json.dumps(SETUP),
            )  # fmt: skip
            assert code == 0, err
            job_id = (run_dir / "slurm_job_id").read_text().strip()
            assert f"submitted job {job_id}" in out
            jobs[name] = (job_id, run_dir)
    (jobs["A"][1] / "release").touch()
    yield jobs
    cancel(*(job_id for job_id, _ in jobs.values()))


@pytest.mark.slurm
def test_submit_runs_a_gan_fit_to_completion(gated_jobs):
    job_id, run_dir = gated_jobs["A"]
    info = wait_for_job(job_id)
    log = log_of(run_dir, job_id)
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert info["Restarts"] == "0"
    # everything in the run directory submit created: script, config, SLURM's output, checkpoints, samples
    assert (run_dir / "submit.sbatch").is_file() and (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "samples" / "batch_0000060.png").is_file()
    assert f"lit_gen: job {job_id} (restart 0)" in log
    assert not list(run_dir.parent.glob("**/slurm-*/")), "the job must not open a slurm-<id> run directory"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["run"]["dir"] == str(run_dir) and config["trainer"]["devices"] == 1


def preempt(job: tuple[str, Path], *scancel: str) -> str:
    """Sends SIGUSR1 with ``scancel SCANCEL`` once the job is held at the gate; waits until it has been requeued
    and has completed; returns its output. Checks that the restart changed neither the run's config.yaml
    nor the rows its CSV log had."""
    job_id, run_dir = job
    wait_for_file(run_dir / "gate_reached", job_id)
    config, rows = (run_dir / "config.yaml").read_text(), metrics_rows(run_dir)
    subprocess.run(["scancel", "-s", "USR1", *scancel, job_id], check=True, capture_output=True, timeout=20)
    info = wait_for_job(job_id)
    log = log_of(run_dir, job_id)
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert info["Restarts"] == "1", log[-3000:]
    assert "restart 0)" in log and f"lit_gen: job {job_id} (restart 1)" in log

    # Lightning's HPC checkpoint, taken at the batch where the signal arrived, in the run's own directory
    hpc = torch.load(run_dir / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    assert hpc["global_step"] == 2 * GATE_BATCH  # one D and one G step per batch
    assert f"Restoring states from the checkpoint path at {run_dir / 'hpc_ckpt_1.ckpt'}" in log
    # config.yaml is not rewritten with `ckpt_path: hpc` (a default logger gains its default arguments)
    before, after = yaml.safe_load(config), yaml.safe_load((run_dir / "config.yaml").read_text())
    assert after["ckpt_path"] is None
    before["trainer"].pop("logger"), after["trainer"].pop("logger")
    assert after == before
    assert rows and metrics_rows(run_dir)[: len(rows)] == rows  # the rows before the restart are kept
    return log


@pytest.mark.slurm
def test_preempted_fit_requeues_resumes_and_matches_an_uninterrupted_run(gated_jobs):
    run_dir = gated_jobs["B"][1]
    # to the batch shell only (`exec srun` passes it on to the training process)
    preempt(gated_jobs["B"], "--batch")

    # both attempts logged to the same (offline) W&B run: its id is kept in the run directory
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    attempts = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    # (one offline folder per W&B session: at least one per attempt, all of them the same run)
    assert len(attempts) >= 2 and all(name.endswith(f"-{run_id}") for name in attempts), attempts

    # the requeued run ends exactly where the uninterrupted one does, and has logged the same rows
    wait_for_job(gated_jobs["A"][0])
    different = differences(final_state(gated_jobs["A"][1]), final_state(run_dir))
    assert not different, f"{len(different)} entries differ after resume, e.g. {different[:5]}"
    assert metrics_rows(run_dir) == metrics_rows(gated_jobs["A"][1])


@pytest.mark.slurm
def test_requeued_run_submitted_again_resumes_from_its_newest_checkpoint(gated_jobs):
    run_dir = gated_jobs["C"][1]
    # to every process of the job: the batch shell (srun) and the training process
    preempt(gated_jobs["C"], "--full")
    wait_for_job(gated_jobs["A"][0])
    assert metrics_rows(run_dir) == metrics_rows(gated_jobs["A"][1])

    # submitted again for 10 more batches: from last.ckpt (batch 60), not the older hpc_ckpt_1 (batch 20)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run_dir.parent)
        code, _, err = submit(
            "--config", run_dir / "config.yaml", "--ckpt_path", "last", "--trainer.max_steps", 140,
            "--slurm.time", "00:10:00", "--slurm.setup", json.dumps(SETUP),
        )  # fmt: skip
    assert code == 0, err
    job_id = (run_dir / "slurm_job_id").read_text().strip()
    info = wait_for_job(job_id)
    log = log_of(run_dir, job_id)
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert f"Restoring states from the checkpoint path at {run_dir / 'checkpoints' / 'last.ckpt'}" in log
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 140
    steps = [int(row["step"]) for row in metrics_rows(run_dir)]
    assert sorted(steps) == steps and len(set(steps)) == len(steps) and steps[-1] == 69


@pytest.mark.slurm
def test_two_task_srun_ddp_job_from_the_single_node_template(slurm_cluster, tmp_path):
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=20).stdout
    assert int(cpus.split()[0]) >= 2, f"the test cluster's node has {cpus.strip()} CPU(s); 2 tasks need 2"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "RUN_ROOT": str(tmp_path / "runs"),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [
            "sbatch",
            "--parsable",
            # the cluster's own settings instead of the template's GPU placeholders
            "--partition=debug",
            "--gpus-per-node=0",
            "--ntasks-per-node=2",
            "--cpus-per-task=1",
            "--mem=2G",
            "--time=00:10:00",
            f"--output={tmp_path}/first-%j.out",
            str(ROOT / "slurm" / "single_node.sbatch"),
            str(TINY),
            "--trainer.strategy",
            "ddp",
            "--trainer.max_steps",
            "20",
            "--checkpoint.every_n_train_steps",
            "10",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    info = wait_for_job(job_id)
    run_dir = tmp_path / "runs" / "tiny_gan" / f"slurm-{job_id}"
    log = log_of(run_dir, job_id)
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert info["NumTasks"] == "2"
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log  # two processes, one DDP group (gloo on CPU)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 20
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert str(config["trainer"]["devices"]) == "2" and config["trainer"]["num_nodes"] == 1


@pytest.mark.slurm
def test_sbatch_rejecting_the_script_is_one_line_and_leaves_nothing(slurm_cluster, tmp_path):
    code, out, err = submit("--config", TINY, "--slurm.partition", "no_such_partition")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lit_gen: error: sbatch rejected submit.sbatch:"), err
    assert "partition" in lines[0].lower()
    assert not (tmp_path / "runs").exists()


def test_requeue_signal_mid_batch_checkpoints_at_the_batch_end(tmp_path):
    """No cluster: SLURM's environment variables and a stand-in ``scontrol``. USR1 arrives before the first
    optimizer step of batch 5; Lightning's handler alone would checkpoint right there (8 optimizer steps,
    half a batch); SLURMRequeue makes it checkpoint after the batch (10 steps), then requeue the job, whose
    SIGTERM (sent by the stand-in scontrol) stops the fit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/bash\necho "$@" >> {bin_dir}/scontrol_args\nkill -TERM $PPID\n')
    scontrol.chmod(0o755)
    env = subprocess_env(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        OMP_NUM_THREADS="1",
        **{f"SLURM_{k}": v for k, v in [("JOB_ID", "4242"), ("JOB_NAME", "lit_gen-test"), ("NTASKS", "1"),
           ("NTASKS_PER_NODE", "1"), ("NNODES", "1"), ("PROCID", "0"), ("LOCALID", "0"), ("NODEID", "0"),
           ("NODELIST", "localhost")]},
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "lit_gen", "fit", "--config", str(TINY), "--run.root", "runs",
         "--trainer.callbacks+=helpers.callbacks.SignalMidBatch", "--trainer.callbacks.batch", "5"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "tiny_gan" / "slurm-4242"  # the CLI's run directory inside a SLURM job
    assert (bin_dir / "scontrol_args").read_text() == "requeue 4242\n", result.stderr[-3000:]
    hpc = torch.load(run_dir / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    assert hpc["global_step"] == 10, result.stderr[-3000:]  # 5 whole batches of one D and one G step
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 10  # trained no further than the checkpoint the requeued job resumes from
