"""What a killed daemon leaves behind, found and removed: only what is
provably its own (a kvcpu-N mount, a link to our node, a temporary link of
a dead maker, the pid file, our CDI spec).  Call with the name's lock held."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import stat

from .. import mounts, paths
from ..errors import StartError
from ..safe_paths import DIR_MODE, owners
from . import cdi
from .options import Options
from .rundir import RunDir


def _is_our_link(opts: Options, path: pathlib.Path) -> bool:
    try:
        return pathlib.Path(os.readlink(path)) in opts.link_targets()
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stale_temp_links(opts: Options) -> list[pathlib.Path]:
    """DEV_DIR/.N.PID links to our node targets whose maker is dead: what a
    daemon killed between symlink and rename leaves."""
    found = []
    pattern = re.compile(re.escape(paths.temp_link_name(opts.name, 0)[:-1]) + r"(\d+)")
    with contextlib.suppress(OSError):
        for entry in os.scandir(opts.dev_dir):
            m = pattern.fullmatch(entry.name)
            if m and entry.is_symlink() and _is_our_link(opts, pathlib.Path(entry.path)) \
                    and not _pid_alive(int(m.group(1))):
                found.append(pathlib.Path(entry.path))
    return found


def remove_leftovers(opts: Options, run_dir: RunDir) -> list[str]:
    """Undo what a killed daemon left, and only what is provably its own:
    a kvcpu-N mount at RUN_DIR/N, a link to our node target, a temporary
    link of a dead maker, the pid file, a CDI spec naming our node, the
    madvise socket.  Call with the name's lock held."""
    removed = []
    if mounts.is_mounted(opts.attr_dir) and mounts.is_ours(opts.attr_dir, opts.name):
        mounts.detach(opts.attr_dir)
        removed.append(f"a stale mount at {opts.attr_dir}")
    if run_dir.unlink(opts.pid_name):
        removed.append("a stale pid file")
    st = run_dir.lstat(opts.madvise_name)
    if st is not None and stat.S_ISSOCK(st.st_mode) and run_dir.unlink(opts.madvise_name):
        removed.append("a stale madvise socket")
    node = opts.node
    if node.is_symlink() and _is_our_link(opts, node):
        node.unlink()
        removed.append(f"a stale link {node}")
    for link in stale_temp_links(opts):
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
            removed.append(f"a stale temporary link {link}")
    removed += [f"a stale CDI spec {spec}" for spec in cdi.remove(opts)]
    return removed


def prepare_attr_dir(opts: Options, run_dir: RunDir) -> bool:
    """RUN_DIR/N: a directory of ours (made 0755) with nothing mounted on
    it, the mount point to be.  Returns whether it was made here, so that
    a start refused later takes it away again (remove_attr_dir)."""
    if mounts.is_mounted(opts.attr_dir):
        entry = mounts.entry_at(opts.attr_dir)
        raise StartError(f"{opts.attr_dir} has a mount that is not ours ({entry and entry[0]}); unmount it first")
    st = run_dir.lstat(opts.name)
    if st is None:
        os.mkdir(opts.name, DIR_MODE, dir_fd=run_dir.fd)
        st = run_dir.lstat(opts.name)
        if st is not None and stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(opts.name, DIR_MODE, dir_fd=run_dir.fd, follow_symlinks=False)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise StartError(f"{opts.attr_dir} exists and is not a directory; remove it first")
    if st.st_uid not in owners():
        raise StartError(f"{opts.attr_dir} is owned by uid {st.st_uid}, not root; remove it first")
    return False


def remove_attr_dir(opts: Options, run_dir: RunDir) -> None:
    """The mount point, if it is empty and nothing is mounted on it: what a
    start refused before its mount leaves (only the log line may stay)."""
    if not mounts.is_mounted(opts.attr_dir):
        with contextlib.suppress(OSError):
            os.rmdir(opts.name, dir_fd=run_dir.fd)
