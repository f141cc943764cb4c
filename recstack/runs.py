"""Training runs: which run wrote the checkpoints of a ``model_save_path``, and the run's log file.

Every training run gets an id, its start time and four random hex digits (``20261205-085537-3fa2``),
sortable by time. The run writes, beside its checkpoints:

- ``<model_save_path>/run.json``, the run manifest: run id, status (``running``, ``done``, ``failed``),
  start and end time, process and host, model, config file, ``-o`` keys, a hash of the resolved config,
  the epochs it has written so far, and what it did with a previous run's checkpoints;
- ``<model_save_path>/train.log``: the run's log (the same lines as the console, from the resolved
  config on), appended after a ``==== run <id> ...`` header line;
- ``run_id`` in each checkpoint's ``meta.json``;
- its TensorBoard scalars in ``<visual_log_path>/<run id>/`` (one curve per run in TensorBoard).

A new run into a folder that holds another run's epoch folders must not leave them beside its own
(``tools/infer.py`` would evaluate epochs of two runs as one curve, ``tools/to_static.py`` export
the wrong one). ``runner.previous_run`` says what happens to them, before the first epoch trains:

- ``archive`` (default): moved, with that run's ``run.json`` and ``train.log``, to
  ``<model_save_path>/previous_runs/<its run id>/`` (a rename: nothing is lost or copied);
- ``remove``: deleted;
- ``refuse``: the run stops (exit status 2) naming what it found, and nothing is touched.

Folders written before run ids existed keep working: their checkpoints count as one run with no id
(``legacy-<time of its newest checkpoint>`` once archived). Readers (:func:`latest_checkpoint` for the
export, :func:`warn_mixed_runs` for ``tools/infer.py``) group a folder's epochs by the ``run_id`` of
their ``meta.json``: the latest run is the one that wrote the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import recstack
from recstack.checkpoint import META_FILE, MODEL_FILE, list_checkpoints
from recstack.config import Config, ConfigError
from recstack.fileio import HOST, atomic_open, owner_alive, owner_tag
from recstack.utils import LOG_FORMAT

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
TRAIN_LOG = "train.log"
INFER_LOG = "infer.log"
PREVIOUS_RUNS = "previous_runs"
#: values of ``runner.previous_run``
POLICIES = ("archive", "remove", "refuse")
#: the logger whose records go to the run's log file (every recstack module logs under it)
LOG_ROOT = "recstack"


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx``: the local start time and four random hex digits."""
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def config_hash(config: Config) -> str:
    """First 12 hex digits of the SHA-256 of the resolved config (keys sorted): equal configs, equal hash."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def epoch_ranges(epochs: Iterable[int]) -> str:
    """``0-2, 5`` for epochs 0, 1, 2, 5."""
    out: list[str] = []
    values = sorted(set(epochs))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


# ---------------------------------------------------------------------- output paths
def check_writable(path: str | os.PathLike, source: str, what: str = "write to") -> None:
    """Check that ``path`` is a folder this process can write, or can be created as one.

    Creates the missing folders and a probe file, then removes what it created: nothing is left behind.

    Raises:
        ConfigError: one line naming ``source`` (the config key) and the path, and why.
    """
    path = Path(path)
    absolute = path.absolute()
    missing = []
    existing = absolute
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"{source}: cannot {what} '{path}': '{existing}' is a broken symbolic link")
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        shown = existing if path.is_absolute() else os.path.relpath(existing)
        where = "it is" if existing == absolute else f"'{shown}' is"
        raise ConfigError(f"{source}: cannot {what} '{path}': {where} a file, not a folder")
    created: list[Path] = []
    step = ""
    try:
        for folder in reversed(missing):
            step = f"creating folder '{folder}'"
            folder.mkdir()
            created.append(folder)
        probe = absolute / f".write-probe-{owner_tag()}"
        step = f"creating a file in '{absolute}'"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{source}: cannot {what} '{path}': {step} failed "
                          f"({err.strerror or type(err).__name__})") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()


# ---------------------------------------------------------------------- what a folder holds
@dataclass
class RunEpochs:
    """The epoch folders of one run in a checkpoint folder."""

    run_id: str | None  #: None: checkpoints written before run ids were recorded
    epochs: list[int] = field(default_factory=list)
    newest: float = 0.0  #: save time of its newest checkpoint (meta.json ``time``)
    manifest: dict[str, Any] = field(default_factory=dict)  #: its run.json when it is the folder's

    @property
    def name(self) -> str:
        return f"run {self.run_id}" if self.run_id else "a run without run id (written by an older recstack)"

    def describe(self) -> str:
        """``epochs 0-2 of run R (started ..., done)``."""
        what = f"epoch{'s' if len(self.epochs) != 1 else ''} {epoch_ranges(self.epochs)} of {self.name}"
        details = []
        if self.manifest.get("started"):
            details.append(f"started {self.manifest['started']}")
        elif self.newest:
            details.append(f"last saved {datetime.datetime.fromtimestamp(self.newest):%Y-%m-%d %H:%M:%S}")
        status = self.manifest.get("status")
        if status:
            details.append("still running" if status == "running" and self.alive() else
                           "ended without finishing (killed?)" if status == "running" else status)
        return what + (f" ({', '.join(details)})" if details else "")

    def alive(self) -> bool:
        """Whether the manifest's process still runs on this host (another host's cannot be told: False)."""
        owner = str(self.manifest.get("owner", ""))
        pid, _, host = owner.partition("@")
        return bool(pid.isdigit() and host == HOST and int(pid) != os.getpid() and owner_alive(int(pid), host))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """``<root>/run.json`` ({} when absent or unreadable)."""
    return _read_json(Path(root) / RUN_FILE)


def checkpoint_run(folder: str | os.PathLike) -> tuple[str | None, float]:
    """``(run id, save time)`` from a checkpoint's meta.json (``(None, mtime)`` without one)."""
    folder = Path(folder)
    meta = _read_json(folder / META_FILE)
    run_id = meta.get("run_id")
    saved = meta.get("time")
    if not isinstance(saved, (int, float)):
        try:
            saved = (folder / MODEL_FILE).stat().st_mtime
        except OSError:
            saved = 0.0
    return (run_id if isinstance(run_id, str) and run_id else None), float(saved)


def runs_in(root: str | os.PathLike, epochs: Iterable[int] | None = None) -> list[RunEpochs]:
    """The epoch folders of ``root`` (or only ``epochs``) grouped by run, oldest run first (the last
    one wrote the newest checkpoint)."""
    root = Path(root)
    wanted = None if epochs is None else set(epochs)
    manifest = read_manifest(root)
    groups: dict[str | None, RunEpochs] = {}
    for name in list_checkpoints(root):
        if not name.isdigit() or (wanted is not None and int(name) not in wanted):
            continue
        run_id, saved = checkpoint_run(root / name)
        group = groups.setdefault(run_id, RunEpochs(run_id))
        group.epochs.append(int(name))
        group.newest = max(group.newest, saved)
    for group in groups.values():
        group.epochs.sort()
        if group.run_id is not None and group.run_id == manifest.get("run_id"):
            group.manifest = manifest
    return sorted(groups.values(), key=lambda g: g.newest)


def latest_checkpoint(root: str | os.PathLike) -> tuple[Path, RunEpochs] | None:
    """The last epoch of the latest run in ``root``, and that run; None without epoch folders.

    A folder holding epochs of several runs is logged as a warning naming them.
    """
    root = Path(root)
    runs = runs_in(root)
    if not runs:
        return None
    latest = runs[-1]
    if len(runs) > 1:
        logger.warning("%s holds checkpoints of %d training runs: %s; using the latest run's", root, len(runs),
                       "; ".join(r.describe() for r in reversed(runs)))
    return root / str(latest.epochs[-1]), latest


def describe_checkpoint(folder: str | os.PathLike) -> str:
    """``epoch 2 of run R (started ...)`` for a checkpoint folder, from its meta.json and run.json."""
    folder = Path(folder)
    run_id, saved = checkpoint_run(folder)
    epoch = folder.name if folder.name.isdigit() else "?"
    if run_id is None:
        return f"epoch {epoch} (saved {datetime.datetime.fromtimestamp(saved):%Y-%m-%d %H:%M:%S}; no run id: " \
               "written by an older recstack)" if saved else f"epoch {epoch} (no run id)"
    manifest = read_manifest(folder.parent)
    started = f", started {manifest['started']}" if manifest.get("run_id") == run_id and manifest.get("started") \
        else ""
    return f"epoch {epoch} of run {run_id}{started}"


def warn_mixed_runs(root: str | os.PathLike, epochs: Iterable[int]) -> None:
    """Warn when ``epochs`` of ``root`` were written by different training runs (naming each run's epochs)."""
    runs = runs_in(root, epochs)
    if len(runs) > 1:
        logger.warning("the epochs evaluated in %s come from %d different training runs: %s; their metrics are "
                       "not one run's curve (train each run into its own runner.model_save_path)", root, len(runs),
                       "; ".join(r.describe() for r in reversed(runs)))


def previous_runs_hint(root: str | os.PathLike, missing: Iterable[int]) -> str:
    """`` (epochs 1-2 of the previous run ... are in X: -o runner.infer_load_path=X)`` when archived runs
    hold the ``missing`` epochs; '' otherwise."""
    archive = Path(root) / PREVIOUS_RUNS
    missing = set(missing)
    if not missing or not archive.is_dir():
        return ""
    for folder in sorted((p for p in archive.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        held = sorted(e for e in missing if (folder / str(e) / MODEL_FILE).is_file())
        if held:
            return (f" (epoch(s) {epoch_ranges(held)} of an earlier run are in {folder}: evaluate them with "
                    f"-o runner.infer_load_path={folder})")
    return ""


def moved_checkpoint_hint(folder: str | os.PathLike) -> str:
    """``; X was moved to .../previous_runs/<id>/X ...`` when a missing checkpoint folder was archived by a
    later run (``runner.previous_run: archive``); '' otherwise."""
    folder = Path(folder)
    archive = folder.parent / PREVIOUS_RUNS
    if (folder / MODEL_FILE).is_file() or not archive.is_dir():
        return ""
    moved = [run / folder.name for run in archive.iterdir() if (run / folder.name / MODEL_FILE).is_file()]
    if not moved:
        return ""
    latest = max(moved, key=lambda p: (p / MODEL_FILE).stat().st_mtime)
    return (f"; {folder} was moved to {latest} when a later run started in {folder.parent} "
            f"(runner.previous_run: archive): use -o runner.model_init_path={latest}")


def run_visual_dir(checkpoint: str | os.PathLike, visual_log_path: str | os.PathLike | None = None) -> Path:
    """The TensorBoard folder of the training run that wrote ``checkpoint`` (``<root>/<epoch>``), where
    ``tools/infer.py`` adds its test metrics: ``<root>/visual_log/<run id>`` when it exists (the default place,
    wherever the folder was moved or copied), else the ``visual_log`` named by ``<root>/run.json`` when that run
    wrote the checkpoint and the folder exists, else ``<visual_log_path or root/visual_log>/<run id>``
    (``no-run-id`` for checkpoints written before run ids)."""
    checkpoint = Path(checkpoint)
    root = checkpoint.parent
    run_id, _ = checkpoint_run(checkpoint)
    if run_id is not None and (root / "visual_log" / run_id).is_dir():
        return root / "visual_log" / run_id
    manifest = read_manifest(root)
    visual = manifest.get("visual_log")
    if run_id is not None and manifest.get("run_id") == run_id and isinstance(visual, str) and Path(visual).is_dir():
        return Path(visual)
    return Path(visual_log_path or root / "visual_log") / (run_id or "no-run-id")


# ---------------------------------------------------------------------- the training run
class _Buffer(logging.Handler):
    """Keeps the records of a run until its log file is opened (nothing is written for a run that
    fails its checks)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # formatted now: later changes to the args do not show
        self.records.append(record)


class TrainingRun:
    """A training run's identity, manifest and log file (rank 0 only; inert on the other ranks).

    Use as a context manager around the run: records are buffered from the start;
    :meth:`check` (before the model is built) verifies the output paths and what the folder holds,
    :meth:`begin` (before the first epoch) deals with a previous run, writes ``run.json`` and opens
    ``train.log`` with the buffered records; :meth:`epoch_saved` after each checkpoint; leaving the
    block marks the run ``done`` or ``failed`` (the error is written to the log file).
    """

    def __init__(self, config: Config, main: bool = True, resume: bool = False) -> None:
        self.config, self.main = config, main
        #: a run that continues the checkpoints in its folder (the online trainer): they stay where they are
        #: (``runner.previous_run`` does not apply)
        self.resume = resume
        self.root = Path(config.get("runner.model_save_path"))
        self.run_id, self.started = new_run_id(), _now()
        self.policy = str(config.get("runner.previous_run", "archive")).lower()
        self.manifest: dict[str, Any] = {}
        self.previous: list[RunEpochs] = []
        self.begun = False
        self._buffer: _Buffer | None = None
        self._file: logging.FileHandler | None = None
        self._restore: tuple[int, logging.Handler | None] | None = None

    # -------------------------------------------------------------- context
    def __enter__(self) -> TrainingRun:
        if self.main:
            log = logging.getLogger(LOG_ROOT)
            if not logging.root.handlers and not log.handlers:
                # logging not configured (recstack called from a script): train.log still gets the INFO lines,
                # and warnings still reach stderr as without a handler (Python's last-resort handler)
                self._restore = (log.level, logging.lastResort)
                log.setLevel(min(log.getEffectiveLevel(), logging.INFO))
                if logging.lastResort is not None:
                    log.addHandler(logging.lastResort)
            self._buffer = _Buffer()
            log.addHandler(self._buffer)
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            if self.begun:
                if error is not None:
                    text = str(error).strip()
                    what = f"{kind.__name__}: {text.splitlines()[0]}" if text else kind.__name__
                    self._log_to_file(logging.ERROR, f"run {self.run_id} failed: {what}")
                    self._update(status="failed", finished=_now(), error=what)
                else:
                    self._update(status="done", finished=_now())
                    logger.info("run %s done: epoch(s) %s in %s (log: %s)", self.run_id,
                                epoch_ranges(self.manifest.get("epochs", [])) or "none", self.root,
                                self.root / TRAIN_LOG)
        finally:
            self._detach()

    def _detach(self) -> None:
        log = logging.getLogger(LOG_ROOT)
        for handler in (self._buffer, self._file):
            if handler is not None:
                log.removeHandler(handler)
                handler.close()
        self._buffer = self._file = None
        if self._restore is not None:
            level, last_resort = self._restore
            log.setLevel(level)
            if last_resort is not None:
                log.removeHandler(last_resort)
            self._restore = None

    def _log_to_file(self, level: int, message: str) -> None:
        """A record in the log file only (the console shows the tool's own error line)."""
        if self._file is not None:
            record = logging.getLogger(__name__).makeRecord(__name__, level, __file__, 0, message, (), None)
            self._file.handle(record)

    # -------------------------------------------------------------- before training
    def output_folders(self) -> list[tuple[str, Path]]:
        """``(config key, folder)`` of every folder the run writes."""
        config = self.config
        folders = [("runner.model_save_path", self.root)]
        if config.get("runner.use_visual"):
            key = "runner.visual_log_path" if config.get("runner.visual_log_path") else "runner.model_save_path"
            folders.append((key, self.visual_root()))
        return folders

    def visual_root(self) -> Path:
        """The TensorBoard folder (``runner.visual_log_path`` or ``<model_save_path>/visual_log``)."""
        return Path(self.config.get("runner.visual_log_path") or self.root / "visual_log")

    def visual_dir(self) -> Path:
        """This run's TensorBoard subfolder."""
        return self.visual_root() / self.run_id

    def check(self) -> None:
        """Before training: the output folders are writable, no live run writes the same folder, and a
        previous run's checkpoints are allowed to go (``runner.previous_run``).

        Raises:
            ConfigError: one line naming the key and the path.
        """
        if not self.main:
            return
        if self.policy not in POLICIES:
            raise ConfigError(f"{self.config.source('runner.previous_run')}: expected one of "
                              f"{', '.join(POLICIES)}, got {self.policy!r}")
        for key, folder in self.output_folders():
            check_writable(folder, self.config.source(key))
        manifest = read_manifest(self.root)
        if manifest.get("status") == "running":
            other = RunEpochs(manifest.get("run_id"), manifest=manifest)
            if other.alive():
                raise ConfigError(f"{self.config.source('runner.model_save_path')}: '{self.root}' is being written by "
                                  f"run {manifest.get('run_id')} (process {manifest.get('pid')}, started "
                                  f"{manifest.get('started')}); wait for it or use another model_save_path")
        self.previous = runs_in(self.root)
        if self.previous and self.policy == "refuse" and not self.resume:
            found = "; ".join(r.describe() for r in reversed(self.previous))
            raise ConfigError(f"{self.config.source('runner.model_save_path')}: '{self.root}' holds {found}; "
                              "runner.previous_run is 'refuse': use a new model_save_path, or "
                              "-o runner.previous_run=archive (moves them to "
                              f"{self.root / PREVIOUS_RUNS}/<run id>/) or runner.previous_run=remove")

    def check_cache(self, reader: Any) -> None:
        """``runner.cache_dir`` is writable, unless it already holds every training file's entry (a
        read-only cache is fine then)."""
        cache_dir = self.config.get("runner.cache_dir")
        if not cache_dir or not getattr(reader, "cacheable", True):
            return
        try:
            check_writable(cache_dir, self.config.source("runner.cache_dir"))
        except ConfigError:
            from recstack.data.base import BinaryCache

            cache = BinaryCache(cache_dir, reader)
            if not all((Path(cache_dir) / cache.key(path) / "meta.json").is_file() for path in reader.file_list):
                raise

    # -------------------------------------------------------------- start
    def begin(self, model: str) -> None:
        """Deal with the previous run's checkpoints (``runner.previous_run``), write ``run.json``, open
        ``train.log`` (the buffered records first)."""
        if not self.main or self.begun:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        previous = [] if self.resume else [self._retire(run) for run in runs_in(self.root)]
        config = self.config
        self.manifest = {
            "run_id": self.run_id, "status": "running", "started": self.started, "finished": None,
            "owner": owner_tag(), "pid": os.getpid(), "host": socket.gethostname(),
            "model": model, "config": str(config.path) if config.path else None,
            "overrides": sorted(config.overridden), "config_hash": config_hash(config),
            "epochs_planned": config.get("runner.epochs"), "epochs": [],
            "visual_log": str(self.visual_dir()) if config.get("runner.use_visual") else None,
            "previous_runs": previous, "recstack": recstack.__version__,
        }
        self._write_manifest()
        self._open_log()
        self.begun = True
        logger.info("run %s: checkpoints, run.json and train.log in %s", self.run_id, self.root)
        self._note_export()

    def _retire(self, run: RunEpochs) -> dict[str, Any]:
        """Archive or remove a previous run's epoch folders (with its run.json and train.log when the
        folder's manifest is that run's); returns what was done, for the manifest."""
        manifest = read_manifest(self.root)
        own_files = [name for name in (RUN_FILE, TRAIN_LOG, INFER_LOG) if (self.root / name).exists()] \
            if (run.run_id is None and not manifest) or manifest.get("run_id") == run.run_id else []
        found = f"model_save_path {self.root} holds {run.describe()}"
        record = {"run_id": run.run_id, "epochs": run.epochs}
        if self.policy == "remove":
            for epoch in run.epochs:
                shutil.rmtree(self.root / str(epoch), ignore_errors=True)
            for name in own_files:
                (self.root / name).unlink(missing_ok=True)
            logger.warning("%s; removed them (runner.previous_run: remove); this run %s starts from an empty folder",
                           found, self.run_id)
            record["removed"] = True
            return record
        name = run.run_id or f"legacy-{datetime.datetime.fromtimestamp(run.newest):%Y%m%d-%H%M%S}"
        target = self.root / PREVIOUS_RUNS / name
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.root / PREVIOUS_RUNS / f"{name}-{suffix}"
        target.mkdir(parents=True)
        for epoch in run.epochs:
            os.replace(self.root / str(epoch), target / str(epoch))
        for own in own_files:
            os.replace(self.root / own, target / own)
        logger.warning("%s; moved them%s to %s (runner.previous_run: archive), so this run %s does not mix its "
                       "epochs with them; delete that folder to free the space, or set runner.previous_run: "
                       "remove", found, f" with its {' and '.join(own_files)}" if own_files else "", target,
                       self.run_id)
        record["moved_to"] = str(target)
        return record

    def _note_export(self) -> None:
        """Say that an export in the folder was made from a previous run's checkpoint."""
        spec = _read_json(self.root / "tostatic.json")
        if spec.get("checkpoint"):
            logger.info("%s/tostatic.* stay as they are: exported from %s, a checkpoint of an earlier run; "
                        "re-run tools/to_static.py after training to export this run's", self.root,
                        spec["checkpoint"])

    def _write_manifest(self) -> None:
        with atomic_open(self.root / RUN_FILE) as f:
            json.dump(self.manifest, f, indent=2, default=str)
            f.write("\n")

    def _update(self, **values: Any) -> None:
        self.manifest.update(values)
        try:
            self._write_manifest()
        except OSError as err:  # (a full disk at the end of a run must not hide the run's own error)
            logger.warning("could not update %s: %s", self.root / RUN_FILE, err)

    def _open_log(self) -> None:
        path = self.root / TRAIN_LOG
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        m = self.manifest
        overrides = f" (overrides: {', '.join(m['overrides'])})" if m["overrides"] else ""
        handler.stream.write(f"==== run {self.run_id} started {m['started']}: model {m['model']}, config "
                             f"{m['config']}{overrides}, config hash {m['config_hash']}, process {m['pid']} on "
                             f"{m['host']} ====\n")
        if self._buffer is not None:
            for record in self._buffer.records:
                handler.handle(record)
            logging.getLogger(LOG_ROOT).removeHandler(self._buffer)
            self._buffer = None
        handler.flush()
        logging.getLogger(LOG_ROOT).addHandler(handler)
        self._file = handler

    # -------------------------------------------------------------- during training
    def meta(self) -> dict[str, Any]:
        """What each checkpoint's meta.json carries about the run."""
        return {"run_id": self.run_id} if self.begun else {}

    def epoch_saved(self, epoch: int) -> None:
        if self.begun:
            self._update(epochs=sorted({*self.manifest.get("epochs", []), epoch}))


# ---------------------------------------------------------------------- other tools' log files
@contextlib.contextmanager
def tool_log(folder: str | os.PathLike | None, name: str, header: str):
    """Append the ``recstack`` log records of the block to ``<folder>/<name>`` (e.g. infer.log beside the
    checkpoints it evaluates) after a ``==== header`` line. A folder that does not exist or cannot be
    written is skipped (with one warning for the latter): the tool still runs."""
    handler = None
    if folder is not None and Path(folder).is_dir():
        try:
            handler = logging.FileHandler(Path(folder) / name, mode="a", encoding="utf-8")
        except OSError as err:
            logger.warning("not writing %s: %s", Path(folder) / name, err.strerror or err)
    if handler is not None:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.stream.write(f"==== {header} {_now()}, process {os.getpid()} on {socket.gethostname()} ====\n")
        logging.getLogger(LOG_ROOT).addHandler(handler)
    try:
        yield
    except BaseException as err:
        if handler is not None and not isinstance(err, (KeyboardInterrupt, SystemExit)):
            record = logger.makeRecord(__name__, logging.ERROR, __file__, 0, f"{type(err).__name__}: {err}", (), None)
            handler.handle(record)
        raise
    finally:
        if handler is not None:
            logging.getLogger(LOG_ROOT).removeHandler(handler)
            handler.close()
