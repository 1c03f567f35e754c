"""Every experiment of the registry through the driver, on the tiny network: its dry run, one item, an
interruption (the run directory and the command that continues it are the last lines; an interrupted
optimisation keeps its current image as a partial result, never counted complete), and a bad input
refused before a backend loads. A new experiment without a line in `TINY` fails here."""

import contextlib
import json
import pathlib
import shlex
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore import driver, interrupts, optimise, training
from deeprestore import images as image_io
from deeprestore.cli import cli
from deeprestore.losslog import LossLog
from deeprestore.recipes import registry

TINY = {
    "dream": ("dream", "--network", "tiny", "--size", "16", "--steps", "3", "--octaves", "1", "--jitter", "0"),
    "style": ("style", "--network", "tiny", "--size", "16", "--steps", "3", "--optimiser", "adam"),
    "texture": ("texture", "--network", "tiny", "--size", "16", "--source-size", "16", "--steps", "3",
                "--optimiser", "adam"),
    "invert optimise": ("invert", "--network", "tiny", "--layer", "relu1", "--size", "16", "--steps", "3",
                        "--images", "astronaut"),
    "invert learned": ("invert", "--method", "learned", "--images", "astronaut"),  # --stack added below
    "invert deconvnet": ("invert", "--method", "deconvnet", "--network", "tiny", "--size", "16", "--channels", "1",
                         "--top", "1", "--images", "astronaut"),
    "stack": ("stack", "--network", "tiny", "--steps", "2", "--size", "16", "--batch-size", "1", "--validation", "1"),
    "denoise train": ("denoise", "train", "--steps", "2", "--patch-size", "16", "--batch-size", "4",
                      "--validation-batches", "1", "--test-size", "48", "--no-baselines"),
    "denoise apply": ("denoise", "apply", "--images", "camera", "--size", "24"),  # --model added below
    # split a: the synthetic training photos alone (the default split heldout synthesises 16 more
    # sequences), 16 tracks a sequence (the default 256 are four times the patches to describe)
    "describe train": ("describe", "train", "--steps", "2", "--triplets", "32", "--batch-size", "16", "--pairs", "200",
                       "--queries", "10", "--split", "a", "--patches", "16"),
}
# A bad input each experiment refuses before any backend loads, and what the one-line error says.
BAD = {
    "dream": (("--layer", "relu1:x"), "--layer got 'relu1:x'"),
    "style": (("--style", "no-such.png"), "no-such.png"),
    "texture": (("--source", "no-such.png"), "no-such.png"),
    "invert optimise": (("--learning-rate", "0.1"), "--learning-rate 0.1 was given with --preset lbfgs"),
    "invert learned": ((), "--method learned needs --stack RUN"),
    "invert deconvnet": (("--to", "relu1"), "--to applies to --method optimise only"),
    "stack": (("--name", "a/b"), "--name"),
    "denoise train": (("--name", ".."), "--name"),
    "denoise apply": (("--corruption", "gaussian:0.1", "--clean", "camera"), "Got both --clean and --corruption"),
    "describe train": (("--inputs", "denoised"), "--denoiser"),
}
OPTIMISATIONS = ("dream", "style", "texture", "invert optimise")


def key(experiment):
    return experiment.name + (f" {experiment.method}" if experiment.method else "")


EXPERIMENTS = [pytest.param(experiment, id=key(experiment)) for experiment in registry.EXPERIMENTS]


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory):
    """A tiny stack for `invert --method learned`."""
    result = invoke(tmp_path_factory.mktemp("stack"), *TINY["stack"], "--from", "pool1")
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    """A tiny trained denoiser for `denoise apply`."""
    result = invoke(tmp_path_factory.mktemp("denoiser"), *TINY["denoise train"])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def descriptor_data(tmp_path_factory):
    """A small synthetic HPatches-format dataset for `describe train` (its default one takes minutes)."""
    from deeprestore.descriptors import synthetic

    spec = synthetic.SyntheticSpec(photos=("camera", "coffee"), count=12, size=160, seed=0)
    return str(synthetic.synthesize(tmp_path_factory.mktemp("descriptors") / "synthetic", spec))


def arguments_of(experiment, request):
    arguments = TINY[key(experiment)]
    if key(experiment) == "invert learned":
        arguments = (*arguments, "--stack", request.getfixturevalue("stack_run"))
    if key(experiment) == "denoise apply":
        arguments = (*arguments, "--model", request.getfixturevalue("denoiser"))
    if key(experiment) == "describe train":
        arguments = (*arguments, "--data", request.getfixturevalue("descriptor_data"))
    return arguments


def invoke(tmp_path, *arguments):
    return CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments])


def test_every_experiment_has_a_tiny_command_line_and_a_bad_input():
    assert {key(experiment) for experiment in registry.EXPERIMENTS} == set(TINY) == set(BAD)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_dry_run_estimates_and_creates_no_run(experiment, tmp_path, request):
    if experiment.estimate is None:
        pytest.skip(f"{key(experiment)} has no --dry-run")
    result = invoke(tmp_path, *arguments_of(experiment, request), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Dry run:") and "MiB" in result.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))


@pytest.mark.parametrize("experiment", [param for param in EXPERIMENTS if param.values[0].train is None])
def test_one_item_runs_to_a_complete_run_printed_last(experiment, tmp_path, request):
    result = invoke(tmp_path, *arguments_of(experiment, request))
    assert result.exit_code == 0, result.output
    run = pathlib.Path(result.stdout.strip().splitlines()[-1])
    assert run.parent == tmp_path / "runs" / experiment.folder and (run / "status").read_text().strip() == "complete"
    assert not (run / "partial").exists()


@contextlib.contextmanager
def interrupted_after_one_step(monkeypatch, experiment):
    """Delivers a SIGTERM, as the driver sees it, after the first step of the experiment's work: the
    second check of an optimisation (one step a chunk), the first step of a training (`stack`; the other
    trainings stop as training does at once, as compiling their models would take a minute), or the end
    of a run without either."""
    calls = []

    def check(number):
        def raise_if_requested():
            calls.append(None)
            if len(calls) == number:
                raise KeyboardInterrupt("SIGTERM")

        return raise_if_requested

    if key(experiment) in OPTIMISATIONS:
        monkeypatch.setattr(optimise, "CHUNK_STEPS", 1)
        monkeypatch.setattr(optimise, "interrupts", types.SimpleNamespace(raise_if_requested=check(2)))
    elif key(experiment) == "stack":
        @contextlib.contextmanager
        def stopped(flag):
            flag["stop"] = "SIGTERM"
            yield

        monkeypatch.setattr(training, "stop_on_signals", stopped)
    elif experiment.train is not None:
        def interrupted(*arguments, **keywords):
            raise training.Interrupted("Training stopped by SIGTERM at step 0; checkpoint written.")

        monkeypatch.setattr("deeprestore.recipes.denoise.train", interrupted)  # imported by name there, first
        monkeypatch.setattr(training, "train", interrupted)
    else:
        monkeypatch.setattr(interrupts, "raise_if_requested", check(1))
    yield


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_interruption_prints_the_run_and_the_command_that_continues_it(experiment, tmp_path, monkeypatch, request):
    arguments = arguments_of(experiment, request)
    with interrupted_after_one_step(monkeypatch, experiment):
        result = invoke(tmp_path, *arguments)
    assert result.exit_code == 130, result.output
    *_, printed_run, command = result.stdout.strip().splitlines()
    run = pathlib.Path(printed_run)
    assert run.parent == tmp_path / "runs" / experiment.folder
    assert (run / "status").read_text().strip() == "interrupted" and "Traceback" not in result.output
    if experiment.train is not None:
        assert command.endswith(f"{experiment.name} --resume {run}") and "checkpoint written" in result.output
    else:
        assert command.startswith("deeprestore ")
    if key(experiment) in OPTIMISATIONS:  # the current image kept, marked partial, never counted complete
        partials = sorted((run / "partial").glob("*.json"))
        assert partials and all('"partial": true' in path.read_text() for path in partials)
        assert (run / "partial" / f"{partials[0].stem}.png").is_file()
        assert not (run / "complete").exists() and "(partial, not complete; a resubmission" in result.output


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_bad_input_is_refused_in_one_line_before_a_backend_loads(experiment, tmp_path, monkeypatch, request):
    def no_backend(name):
        raise AssertionError("the backend was loaded before the inputs were checked")

    monkeypatch.setattr(driver, "use_backend", no_backend)
    arguments = TINY[key(experiment)] if key(experiment) != "denoise apply" else (*TINY["denoise apply"], "--model",
                                                                               str(tmp_path))
    extra, message = BAD[key(experiment)]
    started = time.perf_counter()
    result = invoke(tmp_path, *arguments, *extra)
    elapsed = time.perf_counter() - started
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
    assert elapsed < 5  # under a second on an idle machine: no backend, only the inputs read
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))


def test_a_resubmitted_inversion_continues_from_its_partial_results_and_says_so(tmp_path, monkeypatch):
    arguments = (*TINY["invert optimise"], "--steps", "6", "--name", "job")
    with interrupted_after_one_step(monkeypatch, registry.INVERT_OPTIMISE):
        stopped = invoke(tmp_path, *arguments)
    run = tmp_path / "runs" / "invert" / "job"
    assert stopped.exit_code == 130
    # the command given, as a shell line, whatever the process's own sys.argv (here pytest's)
    assert stopped.stdout.strip().splitlines()[-1] == shlex.join(
        ["deeprestore", "--runs", str(tmp_path / "runs"), "--quiet", *arguments])
    record = json.loads((run / "partial" / "000_astronaut.json").read_text())
    assert record["partial"] and 0 < record["step"] < record["of"] == 6
    monkeypatch.undo()
    resumed = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), *arguments])
    assert resumed.exit_code == 0, resumed.output
    assert f"from the partial results of an interrupted attempt at step {record['step']} of 6" in resumed.output
    assert (run / "complete" / "000_astronaut.json").is_file() and not (run / "partial").exists()


def stopped_after_one_step(tmp_path, monkeypatch, experiment, arguments):
    """The command interrupted after its first step (exit 130): `(result, the named run "job")`."""
    with interrupted_after_one_step(monkeypatch, experiment):
        stopped = invoke(tmp_path, *arguments)
    assert stopped.exit_code == 130, stopped.output
    return stopped, tmp_path / "runs" / experiment.folder / "job"


def resubmitted(tmp_path, monkeypatch, arguments):
    """The same command again, with the interruption undone: `(one entry per optimisation step run, result)`."""
    monkeypatch.undo()
    ran = counting_steps(monkeypatch)
    resumed = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), *arguments])
    assert resumed.exit_code == 0, resumed.output
    return ran, resumed


def counting_steps(monkeypatch):
    """The list that gets one entry per optimisation step run (one step a chunk)."""
    steps = []
    monkeypatch.setattr(optimise, "CHUNK_STEPS", 1)
    monkeypatch.setattr(optimise, "interrupts", types.SimpleNamespace(raise_if_requested=lambda: steps.append(1)))
    return steps


def test_a_resubmitted_style_continues_its_scale_from_the_partial_result_and_says_so(tmp_path, monkeypatch):
    arguments = (*TINY["style"], "--scales", "2", "--steps", "4", "--name", "job")
    stopped, run = stopped_after_one_step(tmp_path, monkeypatch, registry.STYLE, arguments)
    assert "a resubmission continues from it" in stopped.output
    record = json.loads((run / "partial" / "000_chelsea.json").read_text())
    assert (record["step"], record["of"], record["first_step"]) == (1, 4, 0)
    assert record["context"] == {"image": 0, "scale": 1}
    ran, resumed = resubmitted(tmp_path, monkeypatch, arguments)
    assert "continuing from the partial result of an interrupted attempt at scale 1 of 2, step 1 of 4" in resumed.output
    assert len(ran) == 3 + 4
    assert (run / "complete" / "000_chelsea.json").is_file() and not (run / "partial").exists()
    # one row a step: the first attempt's step, then the three left of scale 1 and the four of scale 2
    assert [step for step, _ in LossLog(run / "shards" / "0-of-1" / "losses").values("total")] == list(range(1, 9))


def test_a_resubmitted_dream_continues_its_octave_from_the_partial_result_as_if_never_stopped(tmp_path, monkeypatch):
    arguments = (*TINY["dream"], "--octaves", "2", "--name", "job")
    stopped, run = stopped_after_one_step(tmp_path, monkeypatch, registry.DREAM, arguments)
    assert "a resubmission continues from it" in stopped.output
    record = json.loads((run / "partial" / "000_astronaut.json").read_text())
    assert (record["step"], record["of"], record["first_step"], record["context"]) == (1, 3, 0, {"octave": 1})
    ran, resumed = resubmitted(tmp_path, monkeypatch, arguments)
    assert "continuing from the partial result of an interrupted attempt at octave 1 of 2, step 1" in resumed.output
    assert len(ran) == 2 + 3
    monkeypatch.undo()
    straight = invoke(tmp_path, *TINY["dream"], "--octaves", "2", "--name", "straight")
    assert straight.exit_code == 0, straight.output
    item = pathlib.Path("items") / "000_astronaut"
    steps = [step for step, _ in LossLog(run / item / "losses").values("total")]
    assert steps == [step for step, _ in LossLog(run.parent / "straight" / item / "losses").values("total")]
    assert steps == list(range(1, 7)) and not (run / "partial").exists()
    # a stateless step rule and steps numbered as before: the same dream as one never stopped
    dreams = [image_io.load_image(str(folder / item / "dream.png")) for folder in (run, run.parent / "straight")]
    np.testing.assert_allclose(*dreams, atol=1.5 / 255)


def test_a_resubmitted_dream_continues_a_later_frame_from_the_frame_before_as_written(tmp_path, monkeypatch):
    arguments = (*TINY["dream"], "--octaves", "2", "--frames", "2", "--name", "job")
    calls = []

    def stop_in_the_second_frame():
        calls.append(None)
        if len(calls) == 8:
            raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(optimise, "CHUNK_STEPS", 1)
    monkeypatch.setattr(optimise, "interrupts", types.SimpleNamespace(raise_if_requested=stop_in_the_second_frame))
    stopped = invoke(tmp_path, *arguments)
    run = tmp_path / "runs" / "dream" / "job"
    assert stopped.exit_code == 130 and "a resubmission continues from it" in stopped.output
    record = json.loads((run / "partial" / "000_astronaut.json").read_text())
    assert (record["step"], record["of"], record["first_step"], record["context"]) == (7, 9, 6, {"octave": 1,
                                                                                                 "frame": 2})
    ran, resumed = resubmitted(tmp_path, monkeypatch, arguments)
    assert "at frame 2 of 2, octave 1 of 2, step 7 (stage 1 of 1: 1 of 3 steps)" in resumed.output
    assert len(ran) == 2 + 3 and not (run / "partial").exists()
    monkeypatch.undo()
    straight = invoke(tmp_path, *arguments[:-1], "straight")
    assert straight.exit_code == 0, straight.output
    item = pathlib.Path("items") / "000_astronaut"
    steps = [step for step, _ in LossLog(run / item / "losses").values("total")]
    assert steps == [step for step, _ in LossLog(run.parent / "straight" / item / "losses").values("total")]
    assert steps == list(range(1, 13))
    # the second frame starts from the first as written (8 bits a channel): the dreams differ by a level at most
    dreams = [image_io.load_image(str(folder / item / "dream.png")) for folder in (run, run.parent / "straight")]
    np.testing.assert_allclose(*dreams, atol=1.5 / 255)


def test_a_resubmitted_texture_continues_its_batch_from_the_partial_results_and_says_so(tmp_path, monkeypatch):
    arguments = (*TINY["texture"], "--steps", "5", "--count", "2", "--name", "job")
    stopped, run = stopped_after_one_step(tmp_path, monkeypatch, registry.TEXTURE, arguments)
    assert "a resubmission continues from them" in stopped.output
    records = [json.loads((run / "partial" / f"texture_00{index}.json").read_text()) for index in range(2)]
    assert all((record["step"], record["of"], record["first_step"]) == (1, 5, 0) for record in records)
    ran, resumed = resubmitted(tmp_path, monkeypatch, arguments)
    assert "continuing from the partial results of an interrupted attempt at step 1 of 5" in resumed.output
    assert len(ran) == 4 and not (run / "partial").exists()
    assert [step for step, _ in LossLog(run / "shards" / "0-of-1" / "losses").values("total")] == list(range(1, 6))
    assert all((run / "outputs" / f"texture_00{index}.png").is_file() for index in range(2))
    again = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), *arguments])
    assert again.exit_code == 0 and "Skipping texture: already complete" in again.output and len(ran) == 4


def test_no_bad_input_imports_a_backend(tmp_path):
    """In a fresh interpreter, every experiment's bad input is refused with Keras never imported."""
    cases = [[*TINY[name], *(("--model", str(tmp_path)) if name == "denoise apply" else ()), *BAD[name][0]]
             for name in TINY]
    code = ("import json, sys\nfrom click.testing import CliRunner\nfrom deeprestore.cli import cli\n"
            f"codes = [CliRunner().invoke(cli, ['--runs', {str(tmp_path)!r}, *case]).exit_code for case in {cases!r}]\n"
            "print(json.dumps([codes, [name for name in ('keras', 'tensorflow', 'jax') if name in sys.modules]]))\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=pathlib.Path(__file__).resolve().parent.parent)
    codes, loaded = json.loads(process.stdout.strip().splitlines()[-1])
    assert all(code in (1, 2) for code in codes) and loaded == [], (codes, loaded, process.stderr[-500:])
