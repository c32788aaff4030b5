"""The records of the offline W&B runs a fit writes into its run directory (``wandb/offline-run-*``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_gen.commands.compare import read_wandb_records


def wandb_run_files(run_dir: Path) -> list[Path]:
    """The ``.wandb`` file of each part (offline folder) of the run in ``run_dir``, in order."""
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def wandb_records(path: Path) -> dict[str, list]:
    """The records of one ``.wandb`` file by kind (``run``, ``history``, ``summary``, ``exit``, ...)."""
    by_kind: dict[str, list] = {}
    for record in read_wandb_records(path):
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)
    return by_kind


def wandb_parts(run_dir: Path) -> list[dict[str, list]]:
    """The records of each part (offline folder) of the run in ``run_dir``, in order."""
    return [wandb_records(path) for path in wandb_run_files(run_dir)]


def wandb_summary(part: dict[str, list]) -> dict[str, Any]:
    """The run's final summary: metric -> value (a dict of aggregates for a metric with a summary setting)."""
    values = {}
    for record in part["summary"]:
        for item in record.summary.update:
            values["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return values
