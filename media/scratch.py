"""Workers' scratch folders and what a killed worker leaves in them. A job runs in a folder named
``postflow-<kind>-p<pid>-<random>`` under the temp dir; when the pid in a name is dead, the folder and
any process still working in it (an ffmpeg reparented to init) are leftovers to reap. Used by the
pipeline (making folders, reaping before the first job) and the JobContext middleware (at boot)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

logger = logging.getLogger("postflow.media.scratch")

SCRATCH_PREFIX = "postflow-"


def make_scratch_folder(kind: str) -> Path:
    """A fresh scratch folder for one job of this process (its pid is in the name)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}-p{os.getpid()}-"))


_reaped = False


def _scratch_owner(path: Path) -> int | None:
    """The pid in a scratch folder's name (``postflow-<kind>-p<pid>-<random>``)."""
    try:
        return int(path.name.split("-")[2][1:])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs. A zombie (killed, not yet reaped by an init that may never reap it)
    counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _processes_using(folder: Path) -> list[int]:
    """Pids whose command line or working directory points into ``folder`` (Linux ``/proc``;
    elsewhere none are found). ffmpeg's command line names its input and outputs there."""
    needle = str(folder) + os.sep
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd") if (entry / "cwd").exists() else ""
        except OSError:
            continue  # gone, or not ours to read
        if needle in cmdline or (cwd + os.sep).startswith(needle):
            found.append(int(entry.name))
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL the process and its process group (ffmpeg runs as its own group leader)."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def reap_orphans(*, force: bool = False) -> tuple[int, int]:
    """Clean up after worker processes that died (SIGKILL, OOM) mid-job: kill the processes still
    working in their scratch folders (an ffmpeg reparented to init keeps its CPU and memory until
    it finishes), then remove the folders (partial outputs never reach storage). Runs once per
    process unless ``force``: at worker boot and before the first job. Returns (killed, removed)."""
    global _reaped
    if _reaped and not force:
        return 0, 0
    _reaped = True
    killed = removed = 0
    me = os.getpid()
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-p*-*"):
        pid = _scratch_owner(path)
        if pid is None or pid == me or _pid_alive(pid):
            continue
        for orphan in _processes_using(path):
            if orphan != me:
                _kill_tree(orphan)
                killed += 1
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    if killed or removed:
        logger.warning(
            "reaped dead workers' leftovers: killed %s processes, removed %s scratch folders", killed, removed
        )
    return killed, removed
