"""`deeprestore runs` lists the runs under a folder from their files alone; `summary` points there from a
folder of runs."""

import json
import os
import pathlib
import subprocess
import sys

from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.rundir import RunDir
from deeprestore.runlist import describe, find_runs


def make_runs(root):
    """A finished dream run with 1 of 2 items, an unfinished named run, a stack run at step 20 of 30 that
    this process still owns, and one whose owner died."""
    with RunDir.create(root, "dream", {"settings": {}, "seed": 0, "items": ["000_a", "001_b"]}) as dream:
        dream.complete_item("000_a", {"position": 0})
    with RunDir.join(root, "dream", "job", {"settings": {}, "seed": 0, "items": ["000_a", "001_b"]}, shard="0/2"):
        pass
    stack = RunDir.create(root, "stack", {"settings": {"steps": 30}, "seed": 0})
    stack.checkpoints_dir.joinpath("state.json").write_text(json.dumps({"step": 20, "file": "step-20.weights.h5"}))
    dead = RunDir.create(root, "style", {"settings": {}, "seed": 0})
    dead.release()
    owner = json.loads((dead.path / "owner.json").read_text())
    (dead.path / "owner.json").write_text(json.dumps({**owner, "process_start": "1"}))  # its process is gone
    return dream, stack, dead


def test_runs_lists_each_run_with_its_command_status_owner_progress_and_age(tmp_path):
    dream, stack, dead = make_runs(tmp_path / "runs")

    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "runs"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["command", "name", "status", "owner", "done", "age"] and len(lines) == 5
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows[dream.path.name][:5] == ["dream", dream.path.name, "complete", "-", "1/2"]
    assert rows["job"][:5] == ["dream", "job", "incomplete", "-", "0/2"]
    assert rows[stack.path.name][:6] == ["stack", stack.path.name, "running", "alive", "20/30", "steps"]
    assert rows[dead.path.name][:4] == ["style", dead.path.name, "dead", "dead"]
    assert all(line.split()[-1].endswith("s") for line in lines[1:])  # made seconds ago
    stack.release()


def test_runs_of_one_commands_folder_an_empty_folder_and_a_file(tmp_path):
    make_runs(tmp_path / "runs")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")

    one = CliRunner().invoke(cli, ["runs", str(tmp_path / "runs" / "dream")])
    empty = CliRunner().invoke(cli, ["runs", str(tmp_path / "empty")])
    refused = CliRunner().invoke(cli, ["runs", str(tmp_path / "file")])

    assert one.exit_code == 0 and len(one.output.splitlines()) == 3 and "stack" not in one.output
    assert empty.exit_code == 0 and empty.output == f"No runs under '{tmp_path / 'empty'}'.\n"
    assert refused.exit_code == 2 and "is a file" in refused.output


def test_a_run_with_a_damaged_config_is_listed_as_unreadable_and_the_others_still_are(tmp_path):
    dream, _, _ = make_runs(tmp_path / "runs")
    (dream.path / "config.json").write_text("{not json")

    rows = {row["name"]: row for row in map(describe, find_runs(tmp_path / "runs"))}

    assert rows[dream.path.name]["status"] == "unreadable" and len(rows) == 4


def test_summary_of_a_folder_of_runs_points_to_deeprestore_runs(tmp_path):
    make_runs(tmp_path / "runs")

    result = CliRunner().invoke(cli, ["summary", str(tmp_path / "runs" / "dream")])

    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "is a folder of 2 runs, not a run directory" in result.output
    assert f"`deeprestore runs {tmp_path / 'runs' / 'dream'}` lists them" in result.output


def test_runs_and_summary_read_files_only_and_load_no_backend(tmp_path):
    dream, _, _ = make_runs(tmp_path / "runs")
    script = f"""
import sys
from deeprestore.cli import cli
for arguments in (["runs", {str(tmp_path / "runs")!r}], ["summary", {str(dream.path)!r}]):
    try:
        cli(arguments, prog_name="deeprestore")
    except SystemExit as exit:
        assert exit.code == 0, (arguments, exit.code)
print("loaded:", sorted({{"keras", "tensorflow", "jax"}} & set(sys.modules)))
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "000_a" in completed.stdout and completed.stdout.splitlines()[-1] == "loaded: []"
