"""Run directories, shared by ``fit`` (``lit_gen.cli``) and ``submit`` (``lit_gen.commands.submit``).

A run's directory is ``{run.root}/{run.name}/{YYYYmmdd-HHMMSS}`` (``slurm-{job id}`` inside a SLURM job, so a
requeued job finds its own checkpoints), or the ``run.dir`` a config names. It holds one run at a time
(``RunDirLock``), and a start that fails before its first checkpoint leaves it as it was (``RunDir.restore``):
removed when this start created it, else without the files the start added and with its top-level files as
they were.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from jsonargparse import Namespace

from lit_gen.errors import LitGenError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

#: set by the process that chooses a run directory, inherited by the DDP processes Lightning launches
RUN_DIR_ENV = "LIT_GEN_RUN_DIR"
#: top-level files of an existing run directory up to this size are kept to be put back after a failed start
BACKUP_LIMIT = 1 << 20


def slurm_job_tag() -> str | None:
    """``{array job}_{task}`` or ``{job}`` inside a SLURM job (stable across requeues), else None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def owns_run_dir() -> bool:
    """Whether this process chooses and owns its run directory (lock, messages, clean-up): not a DDP process
    another lit_gen process launched (it inherits ``LIT_GEN_RUN_DIR``), nor one of ``srun``'s or
    ``torchrun``'s processes other than the first."""
    if os.environ.get(RUN_DIR_ENV) is not None:
        return False
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value) == 0
    return True


def run_name(config: Namespace) -> str:
    """``run.name``, else the stem of the last ``--config`` file, else the model's class name in lower case."""
    if config.run.name:
        return config.run.name
    files = config.get("config") or []
    if files:
        return Path(str(files[-1])).stem
    model = config.get("model")
    class_path = model.get("class_path", "run") if isinstance(model, Namespace) else "run"
    return class_path.rsplit(".", 1)[-1].lower()


def fixed_run_dir(config: Namespace) -> Path | None:
    """The run directory a run must use: the config's ``run.dir``, the one the process that launched this DDP
    process chose, or a SLURM job's own (so a requeued job lands in it again); None: a new one."""
    if config.run.dir:
        return Path(config.run.dir)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    job = slurm_job_tag()
    if job:
        return Path(config.run.root) / run_name(config) / f"slurm-{job}"
    return None


def _stamped(parent: Path) -> Iterator[Path]:
    """``parent/{YYYYmmdd-HHMMSS}``, then ``-1``, ``-2`` ... for runs started in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    yield parent / stamp
    for attempt in range(1, 1000):
        yield parent / f"{stamp}-{attempt}"


def next_run_dir(root: str | Path, name: str) -> Path:
    """The directory ``new_run_dir`` would claim now, without creating it (``submit --dry-run``)."""
    parent = Path(root) / name
    for path in _stamped(parent):
        if not path.exists():
            return path
    raise LitGenError(f"run.root: could not choose a new run directory under '{parent}'")


def new_run_dir(root: str | Path, name: str) -> Path:
    """Claims a fresh run directory (created here, so two runs started in the same second never collide)."""
    parent = Path(root) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for path in _stamped(parent):
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:  # read-only or full file system, a file in the way
        raise LitGenError(
            f"run.root: cannot create a run directory under '{parent}' ({err.strerror or err})"
        ) from None
    raise LitGenError(f"run.root: could not create a new run directory under '{parent}'")


class RunDirLock:
    """Keeps other lit_gen processes out of a run directory while a run uses it: an exclusive ``flock`` on
    ``<run dir>/.lit_gen.lock`` (holding the process id), dropped by the OS if the process dies and removed when
    the run ends. Two runs writing into one directory would interleave their logs and share a W&B run."""

    NAME = ".lit_gen.lock"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.NAME
        self._file = None

    def acquire(self) -> None:
        if fcntl is None:  # no flock (Windows): unlocked
            return
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.seek(0)
                holder = file.read().strip() or "?"
                file.close()
                raise LitGenError(
                    f"run.dir: '{self.run_dir}' is in use by another lit_gen run (process {holder}); "
                    "wait for it to end or choose another run directory"
                ) from None
            # the holder may have removed the file between our open and flock: lock the file now at the path
            try:
                if os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            file.close()
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None


class RunDir:
    """A run directory one start writes into, with what it takes to undo that start: the top-most folder the
    start created (None when the directory was there), the mtimes of everything an existing directory held and
    the contents of its small top-level files. Build one with ``claim`` or ``take``."""

    def __init__(self, path: Path, created: Path | None = None, claimed: bool = False) -> None:
        self.path = path
        self.created = created
        self.claimed = claimed  # a fresh timestamped directory: its empty parents go with it
        self.before: dict[Path, int] = {}
        self.backups: dict[Path, bytes] = {}
        self.lock: RunDirLock | None = None

    @classmethod
    def claim(cls, root: str | Path, name: str) -> RunDir:
        """A fresh directory ``{root}/{name}/{YYYYmmdd-HHMMSS}`` (``new_run_dir``)."""
        path = new_run_dir(root, name)
        return cls(path, created=path, claimed=True)

    @classmethod
    def take(cls, path: Path) -> RunDir:
        """The directory ``path``, created when missing, else noted as it is now."""
        if not path.exists():
            created = path.absolute()
            while not created.parent.exists():
                created = created.parent
            try:
                path.mkdir(parents=True)
            except OSError as err:
                raise LitGenError(f"run.dir: cannot create '{path}' ({err.strerror or err})") from None
            return cls(path, created=created)
        run_dir = cls(path)
        run_dir.before = {p: p.lstat().st_mtime_ns for p in path.rglob("*")}
        for file in path.iterdir():
            if file.is_file() and not file.is_symlink() and file.stat().st_size <= BACKUP_LIMIT:
                run_dir.backups[file] = file.read_bytes()
        return run_dir

    def acquire_lock(self) -> None:
        self.lock = RunDirLock(self.path)
        self.lock.acquire()

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def saved_checkpoint(self) -> bool:
        """Whether a checkpoint in the directory is new or changed since it was taken."""
        return any(self.before.get(p) != p.lstat().st_mtime_ns for p in self.path.rglob("*.ckpt"))

    def restore(self) -> Path | None:
        """Leaves the directory as it was before this start; returns the folder it removed, if it removed one."""
        if not self.path.exists():
            return None
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            if self.claimed:
                self._remove_empty_parents()
            return self.created
        keep = {self.path / RunDirLock.NAME}
        for path in sorted(set(self.path.rglob("*")) - self.before.keys() - keep, reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, content in self.backups.items():
            if not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)
        return None

    def remove_if_empty(self) -> None:
        """Removes a claimed directory nothing was written into (e.g. by ``fast_dev_run``)."""
        if self.claimed and self.path.is_dir():
            if not any(p.name != RunDirLock.NAME for p in self.path.iterdir()):
                self.release_lock()
                self.path.rmdir()
                self._remove_empty_parents()

    def _remove_empty_parents(self) -> None:
        for parent in (self.path.parent, self.path.parent.parent):
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                break
