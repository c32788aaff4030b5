"""``python -m lit_gen compare``: runs side by side.

Given run directories (or folders holding them), reads each run's resolved ``config.yaml`` and its logged
metrics, from the offline/online W&B files on disk (``<run>/wandb/*run-*/run-*.wandb``, read without a
W&B server) or else Lightning's CSV log (``<run>/**/metrics.csv``), and writes into ``--out_dir``:

- ``compare.md`` / ``compare.csv``: one row per run with the hyper-parameters that differ between the runs,
  the final and best value of each metric, the last step logged (in training batches) and the wall time
  (also printed);
- ``compare.png``: the chosen metrics' curves against training batches.

With W&B credentials, ``--project ENTITY/PROJECT`` or ``--sweep ENTITY/PROJECT/SWEEP_ID`` reads the runs
from the W&B server instead (``wandb.Api``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser

from lit_gen.errors import LitGenError
from lit_gen.loggers import STEP_KEY

#: metrics where higher is better (the rest: lower is better), matched on the name after the last "/"
#: (with an optional suffix: ``precision_random``)
MAXIMIZED = re.compile(
    r"^(modes|high_quality|inception_score|is|precision|recall|density|coverage|acc\w*)(_\w+)?$"
)
#: config keys that name where a run lives, not how it was trained
_LOCATION_KEYS = re.compile(r"(^run\.|save_dir|dirpath|default_root_dir|^config$|^ckpt_path$)")


@dataclass
class Run:
    """One run: a name, its flattened config, its metric history ``{metric: [(step, value), ...]}``."""

    name: str
    config: dict[str, Any]
    history: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    wall_time_s: float | None = None

    @property
    def steps(self) -> int | None:
        last = [points[-1][0] for points in self.history.values() if points]
        return int(max(last)) if last else None


# --- configs ---------------------------------------------------------------------------------------------------


def _short(value: Any) -> Any:
    """``lit_gen.losses.Hinge`` -> ``Hinge`` (class paths are long and differ only at the end)."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", value):
        last = value.rsplit(".", 1)[1]
        return last if last[:1].isupper() else value
    return value


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys as on the command line: ``init_args`` dropped, ``class_path`` shown as the class name
    under its parent key (``model.generator_optimizer.lr``, ``model.loss``), list items as ``key.0``."""
    flat: dict[str, Any] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "init_args":
                flat.update(flatten_config(value, prefix))
            elif key == "class_path":
                flat[prefix.rstrip(".") or key] = _short(value)
            else:
                flat.update(flatten_config(value, f"{prefix}{key}."))
    elif isinstance(config, list) and any(isinstance(v, (dict, list)) for v in config):
        for i, value in enumerate(config):
            flat.update(flatten_config(value, f"{prefix}{i}."))
    else:
        flat[prefix.rstrip(".")] = json.dumps(config) if isinstance(config, list) else _short(config)
    return flat


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value is not the same in every run (locations like ``run.dir`` left out)."""
    keys = sorted({k for run in runs for k in run.config if not _LOCATION_KEYS.search(k)})
    missing = object()
    return [k for k in keys if len({repr(run.config.get(k, missing)) for run in runs}) > 1]


# --- W&B transaction logs (``run-<id>.wandb``) -------------------------------------------------------------------

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf ``Record``s of a W&B transaction log (LevelDB log format: 32 KiB blocks of chunks with a
    CRC-32, length and type header), up to the first damaged chunk (a run killed mid-write)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise LitGenError(f"compare: '{path}' is not a W&B run file")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # block trailer too short for a header: zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            return
        if kind in (_FULL, _FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _set_nested(config: dict, item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    target = config
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = json.loads(item.value_json)


def read_wandb_run(files: list[Path]) -> tuple[dict, dict[str, list[tuple[float, float]]], float | None]:
    """Config, numeric history (against ``trainer/batch``, else W&B's ``_step``) and wall time of one W&B
    run from its transaction log(s); a resumed offline run has one file per part."""
    config: dict = {}
    history: dict[str, list[tuple[float, float]]] = {}
    wall = 0.0
    for path in files:
        start = last_time = None
        for record in read_wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                start = record.run.start_time.seconds + record.run.start_time.nanos * 1e-9
                for item in record.run.config.update:
                    _set_nested(config, item)
            elif kind == "config":
                for item in record.config.update:
                    _set_nested(config, item)
            elif kind == "history":
                # media (e.g. sample images) come as nested keys ("samples", "width"): not metrics
                items = [item for item in record.history.item if len(item.nested_key) <= 1]
                row = {_item_key(item): json.loads(item.value_json) for item in items}
                step = row.get(STEP_KEY, row.get("_step"))
                last_time = row.get("_timestamp", last_time)
                for key, value in row.items():
                    if key.startswith("_") or key == STEP_KEY or isinstance(value, (dict, list, str)):
                        continue
                    if value is not None and step is not None:
                        history.setdefault(key, []).append((float(step), float(value)))
        if start is not None and last_time is not None:
            wall += max(0.0, float(last_time) - start)
    config.pop("_wandb", None)
    return config, history, (wall or None)


# --- CSV logs --------------------------------------------------------------------------------------------------


def read_csv_history(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Metric history from Lightning's ``metrics.csv`` (its ``step`` column is the training batch)."""
    history: dict[str, list[tuple[float, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                try:
                    history.setdefault(key, []).append((float(step), float(value)))
                except ValueError:
                    continue
    return history


# --- loading runs ----------------------------------------------------------------------------------------------


def _wandb_files(run_dir: Path) -> list[Path]:
    files = [p for p in run_dir.glob("wandb/*run-*/run-*.wandb") if p.parent.name != "latest-run"]
    # by start time, which the folder's name holds: [offline-]run-YYYYmmdd_HHMMSS-<id>
    return sorted(files, key=lambda p: re.findall(r"\d{8}_\d{6}", p.parent.name) or [p.parent.name])


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() or bool(_wandb_files(path)) or any(path.glob("**/metrics.csv"))


def find_run_dirs(paths: list[str]) -> list[Path]:
    """The run directories named by ``paths``; a folder that is not a run holds runs below it."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            raise LitGenError(f"compare: no such run directory '{text}'")
        if (path / "config.yaml").is_file() or _wandb_files(path):
            found.append(path)
            continue
        below = sorted(p.parent for p in path.glob("**/config.yaml") if "wandb" not in p.parts)
        if not below:
            raise LitGenError(f"compare: '{text}' is not a run directory and holds none (no config.yaml)")
        found.extend(below)
    return list(dict.fromkeys(found))


def load_run(run_dir: Path, name: str) -> Run:
    """A run from disk: W&B transaction logs when there are any, else ``metrics.csv``."""
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    wandb_files = _wandb_files(run_dir)
    csv_files = sorted(run_dir.glob("**/metrics.csv"))
    if wandb_files:
        wandb_config, history, wall = read_wandb_run(wandb_files)
        config = config if config is not None else wandb_config
    elif csv_files:
        history = read_csv_history(csv_files[0])
        hparams = csv_files[0].with_name("hparams.yaml")
        start = hparams.stat().st_mtime if hparams.exists() else config_path.stat().st_mtime
        wall = (
            max(0.0, csv_files[0].stat().st_mtime - start) if config is not None or hparams.exists() else None
        )
    else:
        raise LitGenError(f"compare: '{run_dir}' has no logged metrics (no wandb/ run nor metrics.csv)")
    for points in history.values():
        points.sort(key=lambda p: p[0])
    return Run(name=name, config=flatten_config(config or {}), history=history, wall_time_s=wall)


def load_runs(paths: list[str]) -> list[Run]:
    """The runs under ``paths``, named by their path below the folder all of them share."""
    dirs = [d.resolve() for d in find_run_dirs(paths)]
    if len(dirs) == 1:
        names = [str(Path(*dirs[0].parts[-2:]))]
    else:
        common = Path(os.path.commonpath(dirs))
        names = [str(d.relative_to(common)) for d in dirs]
    return [load_run(d, n) for d, n in zip(dirs, names)]


def load_wandb_api_runs(path: str, sweep: bool, metrics: list[str]) -> list[Run]:
    """Runs of a W&B project (``ENTITY/PROJECT``) or sweep (``ENTITY/PROJECT/SWEEP_ID``) from the server."""
    import wandb

    try:
        api = wandb.Api()
        remote = api.sweep(path).runs if sweep else api.runs(path)
        runs = []
        for remote_run in remote:
            keys = metrics or [k for k in remote_run.summary.keys() if not k.startswith("_")]
            history: dict[str, list[tuple[float, float]]] = {}
            for row in remote_run.scan_history(keys=[STEP_KEY, *keys]):
                for key in keys:
                    if isinstance(row.get(key), (int, float)) and row.get(STEP_KEY) is not None:
                        history.setdefault(key, []).append((float(row[STEP_KEY]), float(row[key])))
            runtime = remote_run.summary.get("_runtime")
            config = flatten_config(dict(remote_run.config))
            runs.append(Run(remote_run.name, config, history, float(runtime) if runtime else None))
    except Exception as err:  # network, credentials, unknown path: one line
        raise LitGenError(
            f"compare: cannot read W&B {'sweep' if sweep else 'project'} '{path}': {err}"
        ) from None
    return runs


# --- the report ------------------------------------------------------------------------------------------------


def maximized(metric: str) -> bool:
    return bool(MAXIMIZED.match(metric.rsplit("/", 1)[-1]))


def default_metrics(runs: list[Run]) -> list[str]:
    """``val/*`` metrics when any run logged some, else the training losses."""
    logged = sorted({k for run in runs for k in run.history})
    chosen = [k for k in logged if k.startswith("val/")]
    return chosen or [k for k in logged if "loss" in k] or logged[:4]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def build_table(runs: list[Run], metrics: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: run, differing hyper-parameters, final/best of each metric, last step (on the
    ``trainer/batch`` axis), wall time."""
    params = differing_keys(runs)
    header = ["run", *params]
    for metric in metrics:
        header += [f"{metric} final", f"{metric} {'max' if maximized(metric) else 'min'}"]
    header += ["step", "wall_time_s"]
    rows = []
    for run in runs:
        row: list[Any] = [run.name, *[run.config.get(k) for k in params]]
        for metric in metrics:
            values = [v for _, v in run.history.get(metric, []) if not math.isnan(v)]
            best = (max if maximized(metric) else min)(values) if values else None
            row += [values[-1] if values else None, best]
        row += [run.steps, round(run.wall_time_s, 1) if run.wall_time_s is not None else None]
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_format(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def text_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[_format(v) for v in row] for row in rows]]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def plot_curves(runs: list[Run], metrics: list[str], path: Path) -> None:
    """One panel per metric, one curve per run, against training batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for run in runs:
            points = run.history.get(metric)
            if points:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    marker="." if len(points) < 30 else None,
                    label=run.name,
                )
        ax.set_title(metric)
        ax.set_xlabel("training batches")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (len(labels) // 3), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_gen compare", exit_on_error=False, description=__doc__)
    parser.add_argument(
        "runs", nargs="*", type=str, help="Run directories, or folders holding run directories."
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        type=str,
        default=None,
        help="Metrics to report and plot (default: the val/* metrics, else the losses).",
    )
    parser.add_argument("--out_dir", type=str, default="compare", help="Where compare.{md,csv,png} go.")
    parser.add_argument(
        "--project",
        type=str | None,
        default=None,
        help="Read the runs of this W&B project (ENTITY/PROJECT) from the server.",
    )
    parser.add_argument(
        "--sweep",
        type=str | None,
        default=None,
        help="Read the runs of this W&B sweep (ENTITY/PROJECT/SWEEP_ID) from the server.",
    )
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    sources = sum([bool(args.runs), bool(args.project), bool(args.sweep)])
    if sources != 1:
        raise LitGenError(
            "compare: give run directories, or --project ENTITY/PROJECT, or --sweep ENTITY/PROJECT/ID"
        )
    if args.runs:
        runs = load_runs(args.runs)
    else:
        runs = load_wandb_api_runs(args.sweep or args.project, bool(args.sweep), args.metrics or [])
    if not runs:
        raise LitGenError("compare: found no runs")
    metrics = args.metrics or default_metrics(runs)
    logged = {k for run in runs for k in run.history}
    unknown = [m for m in metrics if m not in logged]
    if unknown:
        raise LitGenError(
            f"compare.metrics: '{unknown[0]}' was not logged by any run (logged: {', '.join(sorted(logged))})"
        )
    header, rows = build_table(runs, metrics)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "compare.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *[["" if v is None else v for v in row] for row in rows]])
    (out / "compare.md").write_text(markdown_table(header, rows))
    written = [out / "compare.md", out / "compare.csv"]
    if metrics:
        plot_curves(runs, metrics, out / "compare.png")
        written.append(out / "compare.png")
    print(text_table(header, rows))
    print(f"lit_gen: wrote {', '.join(map(str, written))}")
