"""Atomic file writes and the clean-up of temporaries left by killed writers (light: no torch
import, usable by the dataset scripts).

Every temporary name carries its owner, ``<pid>@<host>`` (:func:`owner_tag`; ``host`` is a short hash
of the host name), so a later run can tell a leftover of a dead process (removed) from the work in
progress of a live one (kept): :func:`owner_alive` treats a process of another host, or one this
process may not signal, as alive.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

logger = logging.getLogger(__name__)

#: short hash of this host's name, the ``@<host>`` part of temporary names
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
#: ``<pid>`` or ``<pid>@<host>`` at the end of a temporary name
_OWNER = r"(?P<pid>\d+)(?:@(?P<host>[0-9a-f]+))?"
#: temporaries of :func:`atomic_open` / :func:`atomic_path`: ``.<name>.<owner>.tmp``
_TMP_FILE = re.compile(rf"^\.(?P<target>.+)\.{_OWNER}\.tmp$")


def owner_tag() -> str:
    """``<pid>@<host>``: the owner part of this process's temporary names."""
    return f"{os.getpid()}@{HOST}"


def owner_alive(pid: int, host: str | None = None) -> bool:
    """Whether the process that owns a temporary may still be running.

    ``host`` is the temporary's host hash (``None``: a name without one, taken as this host's).
    Only a process of this host that no longer exists counts as dead; another host's process, this
    process and one this process may not signal (another user's) count as alive.
    """
    if host is not None and host != HOST:
        return True
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as err:  # (EINVAL, an overflowing pid: no such process)
        return err.errno not in (errno.ESRCH, errno.EINVAL)
    except OverflowError:
        return False
    return True


def remove_stale_files(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` (``.<name>.<owner>.tmp``) that dead processes left; returns them."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        match = _TMP_FILE.match(tmp.name)
        if match is None or match["target"] != path.name or owner_alive(int(match["pid"]), match["host"]):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
            logger.info("removed %s, left by a killed writer (process %s)", tmp, match["pid"])
    return removed


def stale_folders(folder: str | os.PathLike, prefixes: tuple[str, ...] = (".tmp-",)) -> list[tuple[str, str, Path]]:
    """Temporary folders ``<prefix><name>-<owner>`` in ``folder`` whose owner is dead, as
    ``(prefix, name, path)``; the caller removes them (or, for a checkpoint's ``.old-`` folder, may
    restore it)."""
    folder = Path(folder)
    pattern = re.compile(rf"^(?P<prefix>{'|'.join(re.escape(p) for p in prefixes)})(?P<name>.+)-{_OWNER}$")
    stale = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(prefixes)]
    except OSError:
        return stale
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or not entry.is_dir() or owner_alive(int(match["pid"]), match["host"]):
            continue
        stale.append((match["prefix"], match["name"], entry))
    return stale


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of the temporaries of this module, a checkpoint or a cache
    (``.tmp-*``, ``.old-*``, ``.<name>.<owner>.tmp``): never a checkpoint or an export."""
    return name.startswith((".tmp-", ".old-")) or _TMP_FILE.match(name) is not None


def remove_tree(path: Path, why: str) -> None:
    """``shutil.rmtree`` that logs what it removed and why (ignores errors)."""
    shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        logger.info("removed %s (%s)", path, why)


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (``[``, ``*``, ``?``)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_files(path)
    return path.with_name(f".{path.name}.{owner_tag()}.tmp")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[TextIO]:
    """Open ``path`` for writing through a temporary sibling, renamed into place on success.

    On any error the temporary file is removed and ``path`` is left as it was. Temporaries of
    ``path`` left by killed processes are removed first.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` for writers that take a file name (``torch.jit.save``,
    ``torch.onnx.export``); renamed onto ``path`` when the block succeeds, removed on any error.
    Temporaries of ``path`` left by killed processes are removed first.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
