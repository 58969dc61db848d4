"""The owner-file lock: exclusive, names its holder, taken over only from a dead owner."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pytest

from stream.lock import LockError, PathLock, is_stale, owner_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOLDER = """
import sys
sys.path.insert(0, sys.argv[2])
from stream.lock import PathLock, LockError
try:
    lock = PathLock(sys.argv[1], "test").acquire()
except LockError:
    print("refused", flush=True)
    sys.exit(0)
print("holding", flush=True)
sys.stdin.readline()
lock.release()
"""


def _owner(**changes) -> dict:
    return {**owner_record("t"), **changes}


def test_only_one_of_several_processes_started_together_gets_the_lock(tmp_path):
    path = str(tmp_path / "LOCK")
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, path, REPO], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        said = [p.stdout.readline().strip() for p in procs]
        assert sorted(said) == ["holding", "refused", "refused", "refused"], said
        holder = procs[said.index("holding")]
        assert json.loads(open(path).read())["pid"] == holder.pid
    finally:
        for p in procs:
            p.communicate("\n", timeout=60)
    assert not os.path.exists(path)


def test_a_lock_held_in_this_process_refuses_a_second_claim(tmp_path):
    path = str(tmp_path / "LOCK")
    with PathLock(path, "sink out.csv"):
        with pytest.raises(LockError, match=rf"sink out.csv is in use .*pid {os.getpid()} on host "):
            PathLock(path, "sink out.csv").acquire()
        assert os.path.exists(path)
    assert not os.path.exists(path)


def test_dead_zombie_and_reused_pids_are_stale_live_and_foreign_ones_are_not():
    assert not is_stale(_owner())  # this very process
    assert is_stale(_owner(proc_start=_owner()["proc_start"] + 1))  # the pid was reused since
    assert not is_stale(_owner(host="elsewhere.example", pid=999_999_999))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert is_stale(_owner(pid=proc.pid, proc_start=None))  # killed, not yet reaped
    proc.wait()
    assert is_stale(_owner(pid=proc.pid, proc_start=None))  # gone


def test_an_owner_alive_is_never_taken_over_even_when_the_file_is_not_flocked(tmp_path):
    path = tmp_path / "LOCK"
    path.write_text(json.dumps(_owner()))  # as on a filesystem where flock does nothing
    with pytest.raises(LockError, match=f"pid {os.getpid()}"):
        PathLock(str(path), "checkpoint folder c").acquire()
    assert path.exists()


def test_remote_filesystems_get_a_best_effort_lock(tmp_path):
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())  # not LocalFileSystem: the remote path
    held = PathLock("c/LOCK", "checkpoint folder mem://c", fs).acquire()
    with pytest.raises(LockError, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
        PathLock("c/LOCK", "checkpoint folder mem://c", fs).acquire()
    held.release()
    assert not (tmp_path / "c" / "LOCK").exists()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / "c").mkdir(exist_ok=True)
    (tmp_path / "c" / "LOCK").write_text(json.dumps(_owner(pid=proc.pid, proc_start=None)))
    PathLock("c/LOCK", "checkpoint folder mem://c", fs).acquire().release()  # stale: taken over
