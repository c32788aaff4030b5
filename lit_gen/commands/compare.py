"""``python -m lit_gen compare``: runs side by side.

Given run directories (or folders holding them), reads each run's resolved ``config.yaml`` and its logged
metrics, from the offline/online W&B files on disk (``<run>/wandb/*run-*/run-*.wandb``, read without a
W&B server) or else Lightning's CSV log (``<run>/**/metrics.csv``), and writes into ``--out_dir``:

- ``compare.md`` / ``compare.csv``: one row per run with the hyper-parameters that differ between the runs,
  the final and best value of each metric, the last step logged (in training batches) and the wall time
  (also printed);
- ``compare.png``: the chosen metrics' curves against training batches.

A folder holding runs is not a run itself (a job array's directory holds the ``config.yaml`` its
``task-<i>`` runs start from): its runs are listed. Runs whose configs differ only in ``seed_everything`` (an
array's tasks), or that share a value of ``--group_by KEY``, form a group: its runs are followed by a row of
their means, with a column of their standard deviations next to each metric's, and the plot draws the group's
mean with a band of one standard deviation, named by the group and its seeds in the legend.

With W&B credentials, ``--project ENTITY/PROJECT`` or ``--sweep ENTITY/PROJECT/SWEEP_ID`` reads the runs
from the W&B server instead (``wandb.Api``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jsonargparse import ArgumentParser

from lit_gen.errors import LitGenError
from lit_gen.loggers import STEP_KEY

#: metrics where higher is better (the rest: lower is better), matched on the name after the last "/"
#: (with an optional suffix: ``precision_random``)
MAXIMIZED = re.compile(
    r"^(modes|high_quality|inception_score|is|precision|recall|density|coverage|acc\w*)(_\w+)?$"
)
#: the config key that seeds a run: runs differing only in it are repeats of one setting
SEED_KEY = "seed_everything"
#: config keys that name where a run lives, not how it was trained
_LOCATION_KEYS = re.compile(r"(^run\.|save_dir|dirpath|default_root_dir|^config$|^ckpt_path$)")


@dataclass
class Run:
    """One run: a name, its flattened config, its metric history ``{metric: [(step, value), ...]}``."""

    name: str
    config: dict[str, Any]
    history: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    wall_time_s: float | None = None
    path: Path | None = None

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


def _holds_config(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def _csv_files(run_dir: Path) -> list[Path]:
    """The run's own ``metrics.csv`` files: none from runs nested below it (an array's ``task-<i>``)."""

    def own(path: Path) -> bool:
        return not any(_holds_config(parent) for parent in path.parents if run_dir in parent.parents)

    return sorted(p for p in run_dir.glob("**/metrics.csv") if own(p))


def _has_own_logs(path: Path) -> bool:
    return bool(_wandb_files(path)) or bool(_csv_files(path))


def find_run_dirs(paths: list[str]) -> list[Path]:
    """The run directories named by ``paths``: a folder holding runs (a job array's directory, whose
    ``config.yaml`` only seeds its ``task-<i>`` runs) is a run itself only when it logged metrics itself."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            raise LitGenError(f"compare: no such run directory '{text}'")
        below = {
            p.parent for p in path.glob("**/config.yaml") if "wandb" not in p.relative_to(path).parts[:-1]
        }
        if _wandb_files(path):
            below.add(path)
        if not below:
            raise LitGenError(f"compare: '{text}' is not a run directory and holds none (no config.yaml)")
        runs = [d for d in sorted(below) if not any(d in o.parents for o in below) or _has_own_logs(d)]
        found.extend(runs)
    return list(dict.fromkeys(found))


def load_run(run_dir: Path, name: str) -> Run:
    """A run from disk: W&B transaction logs when there are any, else ``metrics.csv``."""
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    wandb_files = _wandb_files(run_dir)
    csv_files = _csv_files(run_dir)
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
    return Run(name, flatten_config(config or {}), history, wall, run_dir)


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


@dataclass
class Group:
    """Runs of one setting, reported as a mean and standard deviation: repeats that differ only in
    ``seed_everything`` (a job array's tasks), or the runs sharing a value of ``--group_by``."""

    label: str
    runs: list[Run]

    @property
    def legend(self) -> str:
        if len(self.runs) == 1:
            return self.runs[0].name
        seeds = [run.config.get(SEED_KEY) for run in self.runs]
        if None not in seeds and len({repr(seed) for seed in seeds}) == len(seeds):
            return f"{self.label}: mean ± std, seeds {', '.join(map(str, seeds))}"
        return f"{self.label}: mean ± std of {len(self.runs)} runs"


def _setting(run: Run) -> tuple:
    """The run's config without its seed and locations: equal for repeats of one setting."""
    return tuple(
        sorted((k, repr(v)) for k, v in run.config.items() if k != SEED_KEY and not _LOCATION_KEYS.search(k))
    )


def _group_label(runs: list[Run]) -> str:
    """The part of the runs' names they share (an array's directory), else their common folder."""
    if len(runs) == 1:
        return runs[0].name
    common = os.path.commonpath([run.name for run in runs])
    if common:
        return common
    paths = [run.path for run in runs if run.path is not None]
    if len(paths) == len(runs):
        return str(Path(*Path(os.path.commonpath(paths)).parts[-2:]))
    return "runs"


def group_runs(runs: list[Run], group_by: str | None = None) -> list[Group]:
    """The runs in groups, in order of first appearance: by their value of the config key ``group_by``, else
    the runs whose configs differ only in the seed."""
    if group_by is not None and not any(group_by in run.config for run in runs):
        keys = ", ".join(differing_keys(runs)) or "none"
        raise LitGenError(
            f"compare.group_by: '{group_by}' is not in the runs' configs (keys that differ: {keys})"
        )
    members: dict[Any, list[Run]] = {}
    for run in runs:
        members.setdefault(repr(run.config.get(group_by)) if group_by else _setting(run), []).append(run)
    if group_by:
        return [Group(f"{group_by}={_format(g[0].config.get(group_by))}", g) for g in members.values()]
    return [Group(_group_label(g), g) for g in members.values()]


def mean_curve(runs: list[Run], metric: str) -> tuple[list[float], list[float], list[float]] | None:
    """Steps, mean and sample standard deviation of a metric over runs (None for fewer than two runs with
    it): at every step any of them logged within the range all of them cover, each run's curve interpolated
    linearly between its own steps (the same steps for repeats of one config)."""
    curves = [[(s, v) for s, v in run.history.get(metric, []) if not math.isnan(v)] for run in runs]
    curves = [curve for curve in curves if curve]
    if len(curves) < 2:
        return None
    first, last = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    steps = sorted({s for curve in curves for s, _ in curve if first <= s <= last})
    if not steps:
        return None
    values = np.array([np.interp(steps, [s for s, _ in c], [v for _, v in c]) for c in curves])
    return steps, values.mean(axis=0).tolist(), values.std(axis=0, ddof=1).tolist()


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def _finals_and_bests(run: Run, metrics: list[str]) -> list[float | None]:
    cells: list[float | None] = []
    for metric in metrics:
        values = [v for _, v in run.history.get(metric, []) if not math.isnan(v)]
        best = (max if maximized(metric) else min)(values) if values else None
        cells += [values[-1] if values else None, best]
    return cells


def build_table(
    runs: list[Run], metrics: list[str], groups: list[Group] | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: run, differing hyper-parameters, final/best of each metric, last step (on the
    ``trainer/batch`` axis), wall time. Each group of several runs is followed by a row of their means, and
    every metric column by one of their (sample) standard deviations."""
    groups = groups or [Group(run.name, [run]) for run in runs]
    params = differing_keys(runs)
    spread = any(len(group.runs) > 1 for group in groups)
    header = ["run", *params]
    for metric in metrics:
        for column in ("final", "max" if maximized(metric) else "min"):
            header += [f"{metric} {column}", f"{metric} {column} std"] if spread else [f"{metric} {column}"]
    header += ["step", "wall_time_s"]
    rows = []
    for group in groups:
        cells = [_finals_and_bests(run, metrics) for run in group.runs]
        for run, values in zip(group.runs, cells):
            row: list[Any] = [run.name, *[run.config.get(k) for k in params]]
            for value in values:
                row += [value, None] if spread else [value]
            row += [run.steps, round(run.wall_time_s, 1) if run.wall_time_s is not None else None]
            rows.append(row)
        if len(group.runs) > 1:
            shared = [{repr(run.config.get(k)): run.config.get(k) for run in group.runs} for k in params]
            row = [f"{group.label}: mean of {len(group.runs)}"]
            row += [next(iter(values.values())) if len(values) == 1 else None for values in shared]
            for i in range(len(cells[0])):
                values = [c[i] for c in cells if c[i] is not None]
                row += [
                    statistics.fmean(values) if values else None,
                    statistics.stdev(values) if len(values) > 1 else None,
                ]
            steps = {run.steps for run in group.runs}
            walls = [run.wall_time_s for run in group.runs if run.wall_time_s is not None]
            row += [
                steps.pop() if len(steps) == 1 else None,
                round(statistics.fmean(walls), 1) if walls else None,
            ]
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


def draw_curves(groups: list[Group], metrics: list[str]) -> Any:
    """A matplotlib figure: one panel per metric against training batches, a curve per run; a group of
    several runs is drawn as its mean with a band of one standard deviation over faint curves of its runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for i, group in enumerate(groups):
            color = f"C{i % 10}"
            curve = mean_curve(group.runs, metric) if len(group.runs) > 1 else None
            for run in group.runs:
                points = run.history.get(metric)
                if not points:
                    continue
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=color,
                    marker="." if len(points) < 30 and curve is None else None,
                    **({"alpha": 0.3, "linewidth": 0.8} if curve else {"label": run.name}),
                )
            if curve:
                steps, mean, std = curve
                ax.plot(steps, mean, color=color, linewidth=2, label=group.legend)
                low, high = [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
                ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(metric)
        ax.set_xlabel("training batches")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    # as many columns as the longest label leaves room for (about 14 small characters an inch)
    longest = max((len(label) for label in legend), default=1)
    ncol = max(1, min(len(legend), 3, int(5 * cols * 14 / (longest + 6))))
    fig.legend(
        list(legend.values()), list(legend), loc="lower center", ncol=ncol, fontsize="small", frameon=False
    )
    legend_rows = -(-len(legend) // ncol)
    fig.tight_layout(rect=(0, min(0.5, (0.1 + 0.2 * legend_rows) / (3.6 * rows)), 1, 1))
    return fig


def plot_curves(groups: list[Group], metrics: list[str], path: Path) -> None:
    """``draw_curves`` saved as a PNG."""
    import matplotlib.pyplot as plt

    fig = draw_curves(groups, metrics)
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
    parser.add_argument(
        "--group_by",
        "--group-by",
        type=str | None,
        default=None,
        help="Report the runs sharing a value of this config key as one mean ± std (default: the runs whose "
        "configs differ only in seed_everything, such as a job array's tasks).",
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
    groups = group_runs(runs, args.group_by)
    header, rows = build_table(runs, metrics, groups)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "compare.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *[["" if v is None else v for v in row] for row in rows]])
    (out / "compare.md").write_text(markdown_table(header, rows))
    written = [out / "compare.md", out / "compare.csv"]
    if metrics:
        plot_curves(groups, metrics, out / "compare.png")
        written.append(out / "compare.png")
    print(text_table(header, rows))
    print(f"lit_gen: wrote {', '.join(map(str, written))}")
