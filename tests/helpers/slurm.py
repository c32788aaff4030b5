"""The SLURM cluster of the tests marked ``slurm`` (started by the ``slurm_cluster`` fixture), and its jobs.

A real single-node cluster: munged + slurmctld + slurmd from the Debian packages, started without systemd by
``tests/slurm/start-slurm.sh`` and stopped by pid by ``tests/slurm/stop-slurm.sh``. The cluster is started once per test session unless the scripts' cluster is running already (a cluster they
did not start, e.g. a real one on a login node, is never used), and only what was started here is stopped at
the end. It needs root and the Debian package archive (CI has both). Where it cannot be
started the slurm tests FAIL; set ``LIT_GEN_SKIP_SLURM=1`` (or deselect with ``-m "not slurm"``) to skip them.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from .paths import SLURM_FILES

#: where start-slurm.sh records the daemons it started (SLURM_CI_RUN_DIR)
RECORD = Path(os.environ.get("SLURM_CI_RUN_DIR", "/run/slurm-ci")) / "started"
#: job states after which a job does not run again
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def cluster_is_up() -> bool:
    try:
        result = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "is UP" in result.stdout


def node_is_idle() -> bool:
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    return result.returncode == 0 and result.stdout.strip() in ("idle", "mixed", "allocated")


def start_cluster() -> bool:
    """Starts the cluster unless one is up (the ``slurm_cluster`` fixture); returns whether it started it.
    Skips the test with ``LIT_GEN_SKIP_SLURM=1`` and fails it where no cluster of the scripts can run."""
    if os.environ.get("LIT_GEN_SKIP_SLURM") == "1":
        pytest.skip("LIT_GEN_SKIP_SLURM=1: SLURM tests skipped on request")
    if cluster_is_up() and not RECORD.is_file():
        pytest.fail(
            "a SLURM cluster that tests/slurm/start-slurm.sh did not start is running here; the tests only "
            "submit to their own (LIT_GEN_SKIP_SLURM=1 skips them)",
            pytrace=False,
        )
    if not (cluster_is_up() and node_is_idle()):
        # all the cores this process may use (`nproc` in the script would honour OMP_NUM_THREADS=1 of the tests)
        env = {
            **os.environ,
            "SLURM_CI_CPUS": os.environ.get("SLURM_CI_CPUS", str(len(os.sched_getaffinity(0)))),
        }
        result = subprocess.run(
            ["bash", str(SLURM_FILES / "start-slurm.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            pytest.fail(
                "could not start the test SLURM cluster (needs root and apt; LIT_GEN_SKIP_SLURM=1 skips):\n"
                + "\n".join(tail),
                pytrace=False,
            )
        return True
    return False


def stop_cluster() -> None:
    """Stops the daemons ``start_cluster`` started (by pid)."""
    subprocess.run(["bash", str(SLURM_FILES / "stop-slurm.sh")], capture_output=True, text=True, timeout=120)


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
    out = subprocess.run(["scontrol", "show", "job", str(job_id)], capture_output=True, text=True, timeout=20)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def wait_for_job(job_id: str, timeout: float = 150.0) -> dict[str, str]:
    """Polls until the job reaches a final state; returns its ``job_info``."""
    deadline = time.monotonic() + timeout
    info: dict[str, str] = {}
    while time.monotonic() < deadline:
        info = job_info(job_id)
        if info.get("JobState") in FINAL_STATES:
            return info
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout:.0f}s: {info.get('JobState')}")


def wait_for_file(path: Path, job_id: str, timeout: float = 120.0) -> None:
    """Polls until ``path`` exists; fails early if the job ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if job_info(job_id).get("JobState") in FINAL_STATES:
            break
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear (job {job_id}: {job_info(job_id).get('JobState')})")


def cancel(*job_ids: str) -> None:
    subprocess.run(["scancel", *map(str, job_ids)], capture_output=True, timeout=20)
