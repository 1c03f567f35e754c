"""The SLURM templates of experiments/cluster, executed by bash with SLURM's variables set (`#SBATCH`
lines are comments to bash): what they pass to deeprestore, that they `exec` it (so a signal to the batch
shell reaches it), and, with the real command on the tiny network, an array task resubmitted alone into
its run and a training job stopped by SIGTERM and continued by the same submission."""

import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deeprestore.images import save_image

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "experiments" / "cluster"
ARRAYS = {"style_array.sbatch": ("contents.txt", "painting.jpg"), "dream_array.sbatch": ("images.txt",),
          "invert_array.sbatch": ("images.txt",), "denoise_apply_array.sbatch": ("runs/denoise-train/x", "noisy.txt")}
# Records the arguments it was given (one per line) and its process id, instead of running deeprestore.
FAKE = """#!/bin/sh
echo $$ > "$FAKE_RECORD.pid"
printf '%s\\n' "$@" > "$FAKE_RECORD"
"""
# Records its options and becomes the command (one task, in the same process, as exec keeps it).
FAKE_SRUN = """#!/bin/sh
: > "$FAKE_RECORD.srun"
while [ "${1#--}" != "$1" ]; do echo "$1" >> "$FAKE_RECORD.srun"; shift; done
exec "$@"
"""
TRAINING = ("single.sbatch", "train_multi_gpu.sbatch", "train_multi_node.sbatch")


def slurm(job="41", task=None, highest=None, restart="0"):
    """The variables SLURM sets for a batch job, or for one task of an array `0-highest`."""
    variables = {"SLURM_JOB_ID": job, "SLURM_JOB_NAME": "deeprestore", "SLURM_RESTART_COUNT": restart}
    if task is not None:
        variables.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN="0",
                         SLURM_ARRAY_TASK_MAX=str(highest), SLURM_ARRAY_TASK_COUNT=str(highest + 1))
    return variables


@pytest.fixture
def fake(tmp_path):
    """`run(template, *arguments, **variables)` with a fake deeprestore first on PATH: `(arguments it got,
    its pid, the bash process's pid, stdout, stderr, exit code)`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in (("deeprestore", FAKE), ("srun", FAKE_SRUN)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    record = tmp_path / "record"

    def run(template, *arguments, **variables):
        environment = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
                       "FAKE_RECORD": str(record), **variables}
        for name in ("SHARDS", "NAME", "DEEPRESTORE_RUNS"):
            if name not in variables:
                environment.pop(name, None)
        process = subprocess.Popen(["bash", str(TEMPLATES / template), *arguments], env=environment, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, error = process.communicate(timeout=60)
        if process.returncode or not record.is_file():
            return None, None, process.pid, out, error, process.returncode
        got = record.read_text().splitlines()
        pid = int(pathlib.Path(f"{record}.pid").read_text())
        record.unlink()
        return got, pid, process.pid, out, error, process.returncode

    return run


def option(arguments, name):
    return arguments[arguments.index(name) + 1]


def sbatch_options(template):
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", (TEMPLATES / template).read_text(), re.MULTILINE))


def test_every_template_is_covered_here():
    assert sorted(path.name for path in TEMPLATES.glob("*.sbatch")) == sorted(
        [*ARRAYS, *TRAINING])


@pytest.mark.parametrize("template", sorted([*ARRAYS, *TRAINING]))
def test_a_template_needs_no_log_folder_appends_on_requeue_and_warns_before_the_time_limit(template):
    options = sbatch_options(template)
    assert "/" not in options["output"] and options["open-mode"] == "append"  # no folder to make first
    assert re.fullmatch(r"B:TERM@\d+", options["signal"]) and "requeue" in (TEMPLATES / template).read_text()


@pytest.mark.parametrize("template", sorted(ARRAYS))
def test_an_array_task_forwards_options_and_takes_its_shard_of_the_whole_array(fake, template):
    files = ARRAYS[template]
    got, pid, shell, out, error, code = fake(template, *files, "--size", "512", "--steps", "300",
                                             **slurm(job="100", task=3, highest=7))
    assert code == 0, error
    assert pid == shell  # exec: the batch shell is deeprestore, so SLURM's signals reach it
    assert got[-4:] == ["--size", "512", "--steps", "300"] and "--quiet" in got
    assert option(got, "--shard") == "3/8"
    name = option(got, "--name")
    assert "100" not in name and f"/{name}" in out  # not the job id; the log names the run
    redo = re.search(r"to redo this task alone: (.*)", out).group(1)
    assert redo.startswith(f"sbatch --array=3 --export=ALL,SHARDS=8,NAME={name} experiments/cluster/{template}")
    assert shlex.split(redo)[4:] == [*files, "--size", "512", "--steps", "300"]


@pytest.mark.parametrize("template", sorted(ARRAYS))
def test_one_task_resubmitted_alone_joins_the_same_run_as_the_same_shard(fake, template):
    files = ARRAYS[template]
    first, *_ = fake(template, *files, "--steps", "3", **slurm(job="100", task=2, highest=7))
    alone, *_, error, code = fake(template, *files, "--steps", "3", SHARDS="8", **slurm(job="230", task=2, highest=2))
    assert code == 0, error
    assert option(alone, "--shard") == option(first, "--shard") == "2/8"
    assert option(alone, "--name") == option(first, "--name")
    other, *_ = fake(template, *files, "--steps", "4", **slurm(job="100", task=2, highest=7))
    named, *_ = fake(template, *files, "--steps", "4", NAME="mine", **slurm(job="100", task=2, highest=7))
    assert option(other, "--name") != option(first, "--name") and option(named, "--name") == "mine"


def test_an_array_template_outside_an_array_job_says_how_to_submit_it(fake):
    *_, error, code = fake("dream_array.sbatch", "images.txt", **slurm())
    assert code != 0 and "submit with sbatch --array=0-N" in error


@pytest.mark.parametrize("template", TRAINING)
@pytest.mark.parametrize("command", [["stack", "--steps", "9"], ["denoise", "train", "--model", "dncnn"],
                                     ["describe", "train"]])
def test_a_training_job_is_named_by_its_arguments_so_a_resubmission_resumes_it(fake, template, command):
    got, pid, shell, _, error, code = fake(template, *command, **slurm(job="7"))
    assert code == 0 and pid == shell, error
    assert got[got.index(command[0]):got.index("--name")] == command
    name = option(got, "--name")
    assert re.fullmatch(rf"{'stack' if command[0] == 'stack' else command[0] + '-train'}-[0-9a-f]{{12}}", name)
    again, *_ = fake(template, *command, **slurm(job="8", restart="1"))
    assert option(again, "--name") == name
    assert ("--devices" in got) == (template != "single.sbatch")
    given, *_ = fake(template, *command, "--name", "mine", **slurm(job="7"))
    resumed, *_ = fake(template, *command, "--resume", "runs/x", **slurm(job="7"))
    assert given.count("--name") == 1 and option(given, "--name") == "mine" and "--name" not in resumed


def test_the_multi_node_template_starts_one_process_per_node_that_srun_does_not_kill_at_the_first_failure(
        fake, tmp_path):
    got, pid, shell, out, error, code = fake("train_multi_node.sbatch", "stack", "--steps", "9",
                                             **slurm(job="7"), SLURM_NNODES="4", SLURM_JOB_NODELIST="gpu[1-4]")
    assert code == 0 and pid == shell, error  # exec srun, srun exec: SLURM's signal reaches srun, which forwards it
    assert (tmp_path / "record.srun").read_text().split() == ["--ntasks-per-node=1", "--kill-on-bad-exit=0"]
    assert option(got, "--devices") == "all" and "(4 nodes)" in out
    options = sbatch_options("train_multi_node.sbatch")
    assert options["nodes"] == "4" and options["ntasks-per-node"] == "1"


def test_single_passes_any_other_command_as_it_is(fake):
    got, *_, error, code = fake("single.sbatch", "dream", "--image", "a.png", "--size", "64", **slurm())
    assert code == 0, error
    assert got == ["--runs", "runs", "--quiet", "dream", "--image", "a.png", "--size", "64"]


# The real command through the templates, on the tiny network: a shim runs this checkout's package.
SHIM = f"""#!/bin/sh
PYTHONPATH={shlex.quote(str(ROOT))} exec {shlex.quote(sys.executable)} -m deeprestore "$@"
"""


@pytest.fixture
def real(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "deeprestore").write_text(SHIM)
    (folder / "deeprestore").chmod(0o755)

    def start(template, *arguments, **variables):
        environment = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
                       "DEEPRESTORE_RUNS": str(tmp_path / "runs"), "KERAS_BACKEND": "tensorflow", **variables}
        for name in ("SHARDS", "NAME"):
            if name not in variables:
                environment.pop(name, None)
        return subprocess.Popen(["bash", str(TEMPLATES / template), *arguments], env=environment, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    return start


@pytest.mark.slow  # test_one_task_resubmitted_alone_joins_the_same_run_as_the_same_shard checks the template's part
def test_a_dream_array_task_resubmitted_alone_skips_what_it_finished_in_the_same_run(real, tmp_path):
    for index in range(3):
        save_image(tmp_path / "images" / f"image{index}.png", np.full((16, 16, 3), (index + 1) / 4, np.float32))
    options = ("images", "--network", "tiny", "--size", "16", "--octaves", "1", "--steps", "1", "--jitter", "0")
    task = real("dream_array.sbatch", *options, **slurm(job="300", task=0, highest=1))
    log, _ = task.communicate(timeout=300)
    assert task.returncode == 0, log
    run = pathlib.Path(log.strip().splitlines()[-1])
    assert run.parent == tmp_path / "runs" / "dream" and sorted(path.stem for path in (run / "complete").iterdir()) == [
        "000_image0", "002_image2"]
    alone = real("dream_array.sbatch", *options, SHARDS="2", **slurm(job="301", task=0, highest=0, restart="0"))
    log, _ = alone.communicate(timeout=300)
    assert alone.returncode == 0, log
    assert "Skipping 2 of 2 images already complete" in log and log.strip().splitlines()[-1] == str(run)
    jobs = json.loads((run / "shards" / "0-of-2" / "jobs.json").read_text())
    assert [job["SLURM_JOB_ID"] for job in jobs] == ["300", "301"]


def test_sigterm_to_a_training_job_checkpoints_and_the_same_submission_continues_it(real, tmp_path):
    command = ("stack", "--network", "tiny", "--weights", "random", "--from", "pool2", "--size", "16",
               "--validation", "6", "--batch-size", "4", "--validate-every", "0", "--checkpoint-every", "100000")
    job = real("single.sbatch", *command, "--steps", "100000", NAME="stack-job", **slurm(job="500"))
    run = tmp_path / "runs" / "stack" / "stack-job"
    deadline = time.monotonic() + 300
    losses = run / "losses" / "train.loss.csv"
    while not losses.is_file() or len(losses.read_text().split()) < 3:  # a header and two steps
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # what --signal=B:TERM sends the batch shell: deeprestore, by exec
    log, _ = job.communicate(timeout=120)
    step = json.loads((run / "checkpoints" / "state.json").read_text())["step"]
    assert job.returncode == 130 and (run / "status").read_text().strip() == "interrupted"
    assert f"at step {step}; checkpoint written." in log and f"--resume {run}" in log and "--name stack-job" in log

    again = real("single.sbatch", *command, "--steps", str(step + 2), NAME="stack-job", **slurm(job="500",
                                                                                               restart="1"))
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log
    assert (run / "status").read_text().strip() == "complete"
    assert json.loads((run / "checkpoints" / "state.json").read_text())["step"] == step + 2
    assert json.loads((run / "config.json").read_text())["resumes"] == 1
    assert [job["SLURM_RESTART_COUNT"] for job in json.loads((run / "jobs.json").read_text())] == ["0", "1"]
