"""A run killed without marking its status is reported dead, not `running` forever."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from deeprestore import rundir
from deeprestore.cli import cli
from deeprestore.errors import DeepRestoreError
from deeprestore.rundir import RunDir

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Starts a run (named with an item list when asked), prints its folder and waits to be killed.
OWNER = """
import sys, time
from deeprestore.rundir import RunDir
root, name = sys.argv[1], sys.argv[2]
config = {"settings": {}, "seed": 0, "items": ["000_a", "001_b"]}
run = RunDir.create(root, "dream", config) if name == "-" else RunDir.join(root, "dream", name, config)
with run:
    print(run.path, flush=True)
    time.sleep(600)
"""


def killed_run(tmp_path, name="-"):
    process = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "runs"), name], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = pathlib.Path(process.stdout.readline().strip())
    assert RunDir.open(path).status == "running", process.communicate()[1][-500:]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return path, process.pid


def test_a_run_killed_with_sigkill_is_reported_dead_with_its_process(tmp_path):
    path, pid = killed_run(tmp_path)

    status = RunDir.open(path).status

    assert status.startswith("dead: ") and f"process {pid} on " in status and "\n" not in status
    assert (path / "status").read_text() == "running\n"  # the file is untouched; only the reading changed


def test_summary_of_a_named_run_whose_task_was_killed_says_dead_not_running(tmp_path):
    path, pid = killed_run(tmp_path, "job")

    result = CliRunner().invoke(cli, ["--quiet", "summary", str(path)])

    assert result.exit_code == 0, result.output
    assert f"(status: dead: shard 0-of-1: process {pid}" in result.output and "status: running" not in result.output


def test_the_current_process_owns_its_run_and_is_running(tmp_path):
    with RunDir.create(tmp_path, "dream", {}) as run:
        owner = json.loads((run.path / "owner.json").read_text())
        assert run.status == "running" and owner["pid"] > 0 and owner["process_start"]
    assert run.status == "complete"


def test_a_run_on_another_host_is_dead_only_once_its_heartbeat_is_stale(tmp_path):
    run = RunDir.create(tmp_path, "dream", {})
    owner = json.loads((run.path / "owner.json").read_text())
    elsewhere = {**owner, "host": "another-node", "pid": 1}

    (run.path / "owner.json").write_text(json.dumps({**elsewhere, "heartbeat": time.time() - 60}))
    assert run.status == "running"
    stale = time.time() - 2 * rundir.HEARTBEAT_STALE
    (run.path / "owner.json").write_text(json.dumps({**elsewhere, "heartbeat": stale}))
    assert run.status.startswith("dead: process 1 on another-node")


def test_a_reused_process_id_is_not_taken_for_the_owner(tmp_path):
    run = RunDir.create(tmp_path, "dream", {})
    owner = json.loads((run.path / "owner.json").read_text())
    (run.path / "owner.json").write_text(json.dumps({**owner, "process_start": "1"}))  # same pid, other start

    assert run.status.startswith("dead: ")


def test_the_heartbeat_is_renewed_while_the_run_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "HEARTBEAT_SECONDS", 0.02)
    with RunDir.create(tmp_path, "dream", {}) as run:
        first = json.loads((run.path / "owner.json").read_text())["heartbeat"]
        deadline = time.monotonic() + 30
        while json.loads((run.path / "owner.json").read_text())["heartbeat"] == first:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_a_damaged_completion_marker_counts_as_missing_and_summary_says_so_in_one_line(tmp_path):
    run = RunDir.join(tmp_path / "runs", "dream", "job", {"settings": {}, "seed": 0, "items": ["000_a", "001_b"]})
    with run:
        run.complete_item("000_a", {"position": 0})
        run.complete_item("001_b", {"position": 1})
    (run.path / "complete" / "001_b.json").write_text('{"name": "001_b", "posi')

    result = CliRunner().invoke(cli, ["--quiet", "summary", str(run.path)])

    assert not run.item_complete("001_b") and run.missing_items() == [(1, "001_b")]
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "Completion marker" in result.output and "001_b.json" in result.output and "Traceback" not in result.output


# Claims the run (or named run's shard) given, says whether it won, and holds the claim until stdin closes.
CLAIM = """
import sys
from deeprestore.errors import DeepRestoreError
from deeprestore.rundir import RunDir
print("ready", flush=True)
sys.stdin.readline()
try:
    if len(sys.argv) == 2:
        run = RunDir.open(sys.argv[1])
        run.claim()  # held while `run` lives
    else:
        run = RunDir.join(sys.argv[1], "dream", "job", {"settings": {}, "seed": 0}, shard=sys.argv[2])
except DeepRestoreError as error:
    print("refused", error, flush=True)
else:
    print("won", flush=True)
sys.stdin.read()
"""


def claimers(count, *arguments):
    """`count` processes ready to claim, each started with `arguments`; write a line to each to go."""
    processes = [subprocess.Popen([sys.executable, "-c", CLAIM, *map(str, arguments)], cwd=ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(count)]
    for process in processes:
        assert process.stdout.readline() == "ready\n", process.communicate()[1][-500:]
    return processes


def go(processes):
    """Lets every process claim at once; returns each one's answer (`won` or `refused ...`)."""
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    return [process.stdout.readline().strip() for process in processes]


def finish(processes):
    for process in processes:
        process.stdin.close()
        process.wait(timeout=60)


def files(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_of_processes_claiming_one_run_at_once_exactly_one_wins_and_the_others_name_it(tmp_path):
    with RunDir.create(tmp_path, "stack", {}) as run:
        pass
    before = files(run.path)
    processes = claimers(4, run.path)

    answers = go(processes)

    winner = processes[answers.index("won")]
    assert answers.count("won") == 1, answers
    for answer in answers:
        assert answer == "won" or (answer.startswith("refused Run ") and f"owned by process {winner.pid} on " in answer
                                   and "\n" not in answer), answers
    finish(processes)
    assert files(run.path) == before  # the lock is on the folder: no lock file, during or after


def test_a_run_owned_by_a_live_process_is_refused_naming_its_host_and_pid_and_taken_over_once_it_is_gone(tmp_path):
    with RunDir.create(tmp_path, "stack", {}) as run:
        pass
    processes = claimers(1, run.path)
    assert go(processes) == ["won"]

    with pytest.raises(DeepRestoreError, match=f"owned by process {processes[0].pid} on {socket.gethostname()}"):
        RunDir.open(run.path).claim()
    finish(processes)
    taken = RunDir.open(run.path)
    taken.claim()
    assert json.loads((run.path / "owner.json").read_text())["pid"] == os.getpid()
    taken.release()


def test_a_run_marked_running_by_a_live_owner_without_its_lock_is_refused(tmp_path):
    run = RunDir.create(tmp_path, "stack", {})
    run.release()  # as if the owner ran on another host, or on a file system without folder locks
    owner = json.loads((run.path / "owner.json").read_text())
    (run.path / "owner.json").write_text(json.dumps({**owner, "host": "another-node", "pid": 7}))

    with pytest.raises(DeepRestoreError, match=r"owned by process 7 on another-node, alive \(heartbeat 0 s ago\)"):
        RunDir.open(run.path).claim()
    (run.path / "owner.json").write_text(json.dumps({**owner, "process_start": "1"}))  # a recycled process id
    RunDir.open(run.path).claim()


def test_a_killed_owners_run_is_taken_over(tmp_path):
    path, _ = killed_run(tmp_path)

    with RunDir.open(path) as run:
        run.claim()
        assert json.loads((path / "owner.json").read_text())["pid"] == os.getpid()
    assert run.status == "complete"


def test_the_shards_of_a_named_run_run_side_by_side_but_one_shard_runs_once(tmp_path):
    processes = claimers(2, tmp_path, "0/2")
    answers = go(processes)
    assert sorted(answers)[1] == "won" and sorted(answers)[0].startswith("refused Run ")
    assert "shards/0-of-2' is owned by process" in sorted(answers)[0]

    with RunDir.join(tmp_path, "dream", "job", {"settings": {}, "seed": 0}, shard="1/2") as other:
        assert (other.task_path / "status").read_text() == "running\n"
    finish(processes)
    assert sorted(path.name for path in (tmp_path / "dream" / "job" / "shards").iterdir()) == ["0-of-2", "1-of-2"]
