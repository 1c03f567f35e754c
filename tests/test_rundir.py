"""Tests for run directories: layout, unique names, config round trips, status, atomic writes."""

import datetime
import json
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import deeprestore
from deeprestore import rundir
from deeprestore.errors import DeepRestoreError
from deeprestore.rundir import RunDir, atomic_write


class FrozenDatetime(datetime.datetime):
    """A clock stuck on one second, so every run below starts in the same second."""

    @classmethod
    def now(cls, tz=None):
        return cls(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(rundir, "datetime", types.SimpleNamespace(
        datetime=FrozenDatetime, date=datetime.date, time=datetime.time))


def test_create_writes_the_explaining_files_and_folders(tmp_path):
    run = RunDir.create(tmp_path, "dream", {"steps": 10}, argv=["deeprestore", "dream", "my image.png"])

    assert run.path.parent == tmp_path / "dream"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", run.path.name)
    assert sorted(entry.name for entry in run.path.iterdir()) == [
        "argv.txt", "config.json", "images", "losses", "owner.json", "status"]
    assert run.images_dir.is_dir() and run.losses_dir.is_dir()
    assert run.activations_path == run.path / "activations.h5"
    assert shlex.split((run.path / "argv.txt").read_text()) == ["deeprestore", "dream", "my image.png"]
    assert run.status == "running"
    config = json.loads((run.path / "config.json").read_text())
    assert config["steps"] == 10
    assert config["command"] == "dream"
    assert config["deeprestore_version"] == deeprestore.__version__
    assert config["created"][:4].isdigit()


def test_checkpoints_folder_is_created_only_when_asked_for(tmp_path):
    run = RunDir.create(tmp_path, "stack", {}, argv=[])

    assert not (run.path / "checkpoints").exists()
    assert run.checkpoints_dir.is_dir()


def test_fifty_runs_created_in_the_same_second_get_fifty_directories(tmp_path, frozen_clock):
    runs = [RunDir.create(tmp_path, "dream", {"index": index}, argv=[]) for index in range(50)]

    assert len({run.path for run in runs}) == 50
    assert all(run.path.name.startswith("20240102-030405-") for run in runs)
    assert [run.config["index"] for run in runs] == list(range(50))
    assert runs[0].config["created"] == "2024-01-02T03:04:05+00:00"


def test_create_retries_with_a_new_suffix_when_the_name_is_taken(tmp_path, frozen_clock, monkeypatch):
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(rundir.secrets, "token_hex", lambda size: next(suffixes))

    first = RunDir.create(tmp_path, "dream", {}, argv=[])
    second = RunDir.create(tmp_path, "dream", {}, argv=[])

    assert first.path.name == "20240102-030405-aaaaaa"
    assert second.path.name == "20240102-030405-bbbbbb"


def test_runs_created_by_parallel_processes_in_the_same_second_never_share_a_directory(tmp_path):
    # Each process freezes its clock on the same second and races the others to create runs.
    script = textwrap.dedent(f"""
        import datetime, types, sys
        from deeprestore import rundir
        class Frozen(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return cls(2024, 1, 2, 3, 4, 5)
        rundir.datetime = types.SimpleNamespace(datetime=Frozen, date=datetime.date, time=datetime.time)
        for index in range(20):
            rundir.RunDir.create({str(tmp_path)!r}, "dream", {{"process": sys.argv[1]}}, argv=[])
    """)
    repository = pathlib.Path(__file__).parents[1]
    processes = [subprocess.Popen([sys.executable, "-c", script, str(process)], cwd=repository)
                 for process in range(4)]
    assert all(process.wait(timeout=60) == 0 for process in processes)

    names = [path.name for path in (tmp_path / "dream").iterdir()]
    assert len(names) == 80
    assert all(name.startswith("20240102-030405-") for name in names)


def test_config_stores_numpy_values_tuples_and_paths_as_plain_json(tmp_path):
    config = {
        "learning_rate": np.float32(0.5), "steps": np.int64(3), "flag": np.bool_(True),
        "mean": np.array([1.0, 2.0]), "size": (224, 224), "image": pathlib.Path("a/b.png"),
        "nested": {"octaves": (np.int32(1), 2)},
    }
    run = RunDir.create(tmp_path, "style", config, argv=[])

    reopened = RunDir.open(run.path).config
    assert reopened["learning_rate"] == 0.5
    assert reopened["steps"] == 3 and reopened["flag"] is True
    assert reopened["mean"] == [1.0, 2.0]
    assert reopened["size"] == [224, 224]
    assert reopened["image"] == "a/b.png"
    assert reopened["nested"] == {"octaves": [1, 2]}
    text = (run.path / "config.json").read_text()
    assert text.startswith('{\n  "command"')  # indent 2, sorted keys


def test_update_config_merges_into_the_stored_file(tmp_path):
    run = RunDir.create(tmp_path, "dream", {"steps": 10}, argv=[])

    run.update_config(seed=np.int64(7), steps=20)

    stored = json.loads((run.path / "config.json").read_text())
    assert stored["seed"] == 7 and stored["steps"] == 20 and stored["command"] == "dream"
    assert RunDir.open(run.path).config == stored


def test_argv_defaults_to_the_process_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["deeprestore", "texture", "--steps", "5"])

    run = RunDir.create(tmp_path, "texture", {})

    assert (run.path / "argv.txt").read_text() == "deeprestore texture --steps 5\n"


def test_mark_records_each_status_on_one_line(tmp_path):
    run = RunDir.create(tmp_path, "dream", {}, argv=[])

    run.mark("complete")
    assert run.status == "complete"
    run.mark("failed: out of\nmemory")
    assert run.status == "failed: out of memory"
    run.mark("interrupted")
    assert (run.path / "status").read_text() == "interrupted\n"
    with pytest.raises(ValueError):
        run.mark("finished")


def test_context_manager_marks_complete_on_normal_exit(tmp_path):
    with RunDir.create(tmp_path, "dream", {}, argv=[]) as run:
        assert run.status == "running"

    assert run.status == "complete"


def test_context_manager_marks_failed_and_reraises_an_exception(tmp_path):
    run = RunDir.create(tmp_path, "dream", {}, argv=[])

    with pytest.raises(RuntimeError, match="boom"), run:
        raise RuntimeError("boom\nsecond line")

    assert run.status == "failed: RuntimeError: boom second line"


def test_context_manager_marks_interrupted_and_reraises_keyboard_interrupt(tmp_path):
    run = RunDir.create(tmp_path, "dream", {}, argv=[])

    with pytest.raises(KeyboardInterrupt), run:
        raise KeyboardInterrupt

    assert run.status == "interrupted"


def test_save_json_writes_atomically_and_leaves_no_temporary_files(tmp_path):
    run = RunDir.create(tmp_path, "describe", {}, argv=[])

    path = run.save_json("metrics.json", {"psnr": np.float64(31.5), "layers": ("a", "b")})
    run.save_json("metrics.json", {"psnr": 32.0})

    assert path == run.path / "metrics.json"
    assert json.loads(path.read_text()) == {"psnr": 32.0}
    assert not [entry for entry in run.path.iterdir() if entry.name.endswith(".tmp")]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "status"
    atomic_write(path, "running\n")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write(path, b"complete\n")

    assert path.read_text() == "running\n"
    assert [entry.name for entry in tmp_path.iterdir()] == ["status"]


def test_open_reopens_an_existing_run(tmp_path):
    run = RunDir.create(tmp_path, "dream", {"steps": 3}, argv=[])

    reopened = RunDir.open(str(run.path))

    assert reopened.path == run.path
    assert reopened.config["steps"] == 3
    assert reopened.status == "running"


def test_open_rejects_a_folder_without_config(tmp_path):
    with pytest.raises(DeepRestoreError, match="is not a run directory"):
        RunDir.open(tmp_path)
    with pytest.raises(DeepRestoreError, match="is not a run directory"):
        RunDir.open(tmp_path / "missing")


def test_open_rejects_a_config_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")

    with pytest.raises(DeepRestoreError, match="is not valid JSON"):
        RunDir.open(tmp_path)


def test_create_rejects_a_command_that_is_not_a_folder_name(tmp_path):
    with pytest.raises(DeepRestoreError, match="is not a folder name"):
        RunDir.create(tmp_path, "../escape", {}, argv=[])


def test_join_creates_a_named_run_once_and_later_tasks_join_it(tmp_path):
    config = {"settings": {"steps": 3}, "seed": 0, "items": ["000_a", "001_b", "002_c"]}
    first = RunDir.join(tmp_path, "dream", "job", config, shard="0/2", argv=["deeprestore", "dream"])
    second = RunDir.join(tmp_path, "dream", "job", config, shard="1/2", argv=["deeprestore", "dream"])
    assert first.path == second.path == tmp_path / "dream" / "job"
    assert [entry.name for entry in (tmp_path / "dream").iterdir()] == ["job"]  # no staging folder left
    assert second.task_path == second.path / "shards" / "1-of-2" and second.losses_dir.parent == second.task_path
    assert second.config["name"] == "job" and second.status == "running"
    first.complete_item("000_a", {"position": 0})
    first.complete_item("002_c", {"position": 2})
    first.mark("complete")
    second.mark("failed: boom")
    assert second.status == "failed: shard 1-of-2: boom" and second.missing_items() == [(1, "001_b")]
    second.complete_item("001_b", {"position": 1})
    assert RunDir.open(second.path).status == "complete"
    assert list(second.item_records()) == ["000_a", "001_b", "002_c"]


def test_join_refuses_other_settings_and_a_folder_that_is_not_the_named_run(tmp_path):
    RunDir.join(tmp_path, "dream", "job", {"settings": {"steps": 3}, "seed": 0})
    with pytest.raises(DeepRestoreError, match=r"started with settings.steps=3; this task has settings.steps=4"):
        RunDir.join(tmp_path, "dream", "job", {"settings": {"steps": 4}, "seed": 0})
    timestamped = RunDir.create(tmp_path, "dream", {"settings": {}})
    with pytest.raises(DeepRestoreError, match="not the named dream run"):
        RunDir.join(tmp_path, "dream", timestamped.path.name, {"settings": {}})
    with pytest.raises(DeepRestoreError, match="is not a folder name"):
        RunDir.join(tmp_path, "dream", "../elsewhere", {})


def test_tasks_joining_one_named_run_at_once_all_land_in_it(tmp_path):
    # Each process joins twenty named runs, racing the others to create each one.
    script = textwrap.dedent(f"""
        import sys
        from deeprestore import rundir
        for index in range(20):
            rundir.RunDir.join({str(tmp_path)!r}, "dream", f"job{{index}}", {{"settings": {{}}}},
                               shard=f"{{sys.argv[1]}}/4", argv=[])
    """)
    repository = pathlib.Path(__file__).parents[1]
    processes = [subprocess.Popen([sys.executable, "-c", script, str(process)], cwd=repository)
                 for process in range(4)]
    assert all(process.wait(timeout=60) == 0 for process in processes)

    assert sorted(path.name for path in (tmp_path / "dream").iterdir()) == sorted(f"job{index}" for index in range(20))
    for index in range(20):
        run = RunDir.open(tmp_path / "dream" / f"job{index}")
        assert run.config["name"] == f"job{index}"
        assert sorted(path.name for path in (run.path / "shards").iterdir()) == [f"{task}-of-4" for task in range(4)]


def test_notices_are_kept_one_line_each(tmp_path):
    run = RunDir.create(tmp_path, "dream", {"settings": {}})
    run.note("L-BFGS stopped\n early.")
    run.note("second")
    assert (run.path / "notices.txt").read_text().splitlines() == ["L-BFGS stopped early.", "second"]
