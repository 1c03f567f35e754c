"""`--name` on the training commands: the first submission creates the run, a resubmission with the same
options resumes it, a complete one is left alone and other options are refused; a refused `--devices`
leaves no run directory; an interrupted training run says which run stopped and how to continue it."""

import json

import pytest
from click.testing import CliRunner

from deeprestore import training
from deeprestore.cli import cli

TINY_STACK = ("stack", "--network", "tiny", "--weights", "random", "--from", "pool2", "--size", "16",
              "--validation", "6", "--batch-size", "4", "--validate-every", "0", "--checkpoint-every", "2")


def invoke(tmp_path, *arguments):
    return CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments])


def step(run):
    return json.loads((run / "checkpoints" / "state.json").read_text())["step"]


@pytest.mark.slow  # the templates' naming tests and the real SIGTERM resubmission cover it in part
def test_a_named_training_run_is_created_then_resumed_then_left_alone_when_complete(tmp_path):
    run = tmp_path / "runs" / "stack" / "requeued"
    first = invoke(tmp_path, *TINY_STACK, "--steps", "2", "--name", "requeued")
    assert first.exit_code == 0, first.output
    assert first.output.strip().splitlines()[-1] == str(run) and step(run) == 2
    assert "name" not in json.loads((run / "config.json").read_text())  # one process's run, not an array's

    again = invoke(tmp_path, *TINY_STACK, "--steps", "2", "--name", "requeued")
    assert again.exit_code == 0 and f"Run {run} is already complete (2 steps); nothing to do." in again.output

    longer = invoke(tmp_path, *TINY_STACK, "--steps", "4", "--name", "requeued")
    assert longer.exit_code == 0, longer.output
    assert step(run) == 4 and json.loads((run / "config.json").read_text())["resumes"] == 1
    assert (run / "status").read_text().strip() == "complete" and len((run / "argv.txt").read_text().splitlines()) == 2

    other = invoke(tmp_path, *TINY_STACK, "--steps", "4", "--batch-size", "2", "--name", "requeued")
    assert other.exit_code == 1 and other.output.count("\n") == 1
    assert f"Run '{run}' was started with --batch-size 4; this command has 2." in other.output
    reseeded = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--seed", "1", *TINY_STACK, "--steps", "4",
                                        "--name", "requeued"])
    assert reseeded.exit_code == 1 and "was started with --seed 0; this command has 1." in reseeded.output
    assert step(run) == 4 and (run / "status").read_text().strip() == "complete"


@pytest.mark.parametrize("arguments, message", [
    (("--name", "x", "--resume", "."), "Got --resume . and --name x; expected one"),
    (("--name", "a/b"), "--name 'a/b' is not a folder name"),
])
def test_a_bad_name_is_refused_before_any_run_exists(tmp_path, arguments, message):
    result = invoke(tmp_path, *TINY_STACK, "--steps", "2", *arguments)
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "runs" / "stack").exists()


@pytest.mark.parametrize("command", [TINY_STACK, ("denoise", "train", "--patch-size", "16", "--steps", "2"),
                                     ("describe", "train", "--steps", "2")])
def test_a_refused_devices_count_leaves_no_run_directory(tmp_path, command):
    result = invoke(tmp_path, *command, "--devices", "64")
    assert result.exit_code == 1 and "--devices 64 asks for 64 devices; found 1" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))


def test_an_interrupted_training_run_names_itself_and_the_command_that_continues_it(tmp_path, monkeypatch):
    def interrupted(*arguments, **keywords):
        raise training.Interrupted("Training stopped by SIGTERM at step 3; checkpoint written.")

    monkeypatch.setattr(training, "train", interrupted)
    result = invoke(tmp_path, *TINY_STACK, "--steps", "8", "--name", "stopped")
    run = tmp_path / "runs" / "stack" / "stopped"
    assert result.exit_code == 130 and (run / "status").read_text().strip() == "interrupted"
    assert (f"Interrupted: Training stopped by SIGTERM at step 3; checkpoint written. Run {run} is marked "
            f"interrupted. Continue it from its last checkpoint with: deeprestore --backend tensorflow stack --resume "
            f"{run}, or run the same command again (--name stopped).") in result.output
