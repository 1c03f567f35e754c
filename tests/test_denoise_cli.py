"""`deeprestore denoise`: train and apply end to end on tiny sizes, resuming, and one-line errors."""

import json
import os
import pathlib
import signal

import imageio.v3 as imageio
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.losslog import LossLog
from deeprestore.restoration.data import PatchData

TINY = ("--patch-size", "16", "--batch-size", "4", "--validation-batches", "1", "--test-size", "48")


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, tmp_path, *arguments):
    return runner.invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments], catch_exceptions=False)


def run_directory(result):
    assert result.exit_code == 0, result.output
    return pathlib.Path(result.output.strip().splitlines()[-1])


@pytest.fixture
def photos(tmp_path):
    """A folder of two small photo crops."""
    folder = tmp_path / "photos"
    folder.mkdir()
    import skimage.data

    imageio.imwrite(folder / "a.png", skimage.data.camera()[100:180, 200:300])
    imageio.imwrite(folder / "b.png", skimage.data.astronaut()[:64, :96])
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A unet run trained for 4 steps on the bundled photos (shared by the apply tests)."""
    tmp_path = tmp_path_factory.mktemp("trained")
    result = invoke(CliRunner(), tmp_path, "denoise", "train", "--steps", "4", "--checkpoint-every", "2", *TINY)
    return run_directory(result)


def test_train_writes_a_complete_run_with_model_curves_and_scores(trained):
    assert (trained / "status").read_text().strip() == "complete"
    config = json.loads((trained / "config.json").read_text())
    assert config["command"] == "denoise-train" and config["settings"]["model"] == "unet"
    assert config["resolved"]["loss"] == "mae" and config["resolved"]["corruption"] == "gaussian:0.1"
    assert config["trainable_parameters"] == 59_777
    assert not {"camera", "astronaut"} & set(config["data"]["images"])  # the held-out photos
    for name in ("model.keras", "curves.png", "figure.png", "metrics.csv", "metrics.json", "losses/losses.png",
                 "images/model.png", "images/nl-means.png", "checkpoints/state.json"):
        assert (trained / name).is_file(), name
    assert len(LossLog.read(trained / "losses")["train.loss"]) == 4
    rows = json.loads((trained / "metrics.json").read_text())["rows"]
    assert [row["method"] for row in rows][:4] == ["input", "model", "tv", "nl-means"]
    model = keras.saving.load_model(trained / "model.keras")
    assert model.inputs[0].shape[-1] == 1


def test_train_writes_a_learning_curve_on_the_held_out_photos_beside_the_baselines(trained):
    from deeprestore.restoration import curves

    rows = curves.read_rows(trained / "curves" / curves.CURVE_FILE)
    assert [row["step"] for row in rows] == [0, 4]  # before the first step, and at the last
    assert {"psnr.camera", "ssim.astronaut", "cpu_seconds"} <= set(rows[0])
    methods = [line.split(",")[0] for line in (trained / "curves" / "baselines.csv").read_text().splitlines()]
    assert methods[:4] == ["method", "input", "tv", "nl-means"]
    assert (trained / "curves" / curves.PLOT_FILE).is_file()


def test_a_run_too_short_to_learn_says_so(trained):
    rows = {row["method"]: row["psnr"] for row in json.loads((trained / "metrics.json").read_text())["rows"]}
    assert rows["model"] <= rows["input"]  # 4 steps: the premise of the warning
    assert "has not learned yet; expected more --steps (its default is 1000)" in (trained / "notices.txt").read_text()


def test_no_warning_once_the_model_beats_its_input():
    from deeprestore import settings
    from deeprestore.recipes.denoise import resolve, unlearned_warning
    from deeprestore.restoration.models import get_spec

    resolved = resolve(settings.DenoiseSettings())
    spec = get_spec(resolved.model)
    learned = [{"method": "input", "psnr": 20.0}, {"method": "model", "psnr": 24.0}]
    assert unlearned_warning(learned, resolved, spec) is None
    assert "20.00 dB against 20.00 dB" in unlearned_warning(
        [{"method": "input", "psnr": 20.0}, {"method": "model", "psnr": 20.0}], resolved, spec)


def test_apply_restores_a_corrupted_image_of_odd_size_in_tiles(runner, tmp_path, trained):
    result = invoke(runner, tmp_path, "denoise", "apply", "--model", str(trained), "--images", "camera", "--size", "90",
                    "--corruption", "salt-and-pepper:0.1", "--tile", "32", "--overlap", "8", "--no-baselines")
    run = run_directory(result)
    assert (run / "status").read_text().strip() == "complete"
    assert imageio.imread(run / "images" / "model.png").shape == (90, 90, 3)
    assert [row["method"] for row in json.loads((run / "metrics.json").read_text())["rows"]] == ["input", "model"]
    assert (run / "figure.png").is_file()


def test_apply_with_a_clean_reference_and_without_one(runner, tmp_path, trained, photos):
    noisy = tmp_path / "noisy.png"
    clean = imageio.imread(photos / "a.png")
    imageio.imwrite(noisy, np.clip(clean.astype(int) + 20, 0, 255).astype(np.uint8))
    run = run_directory(invoke(runner, tmp_path, "denoise", "apply", "--model", str(trained / "model.keras"),
                               "--images", str(noisy), "--clean", str(photos / "a.png"), "--no-baselines"))
    assert (run / "metrics.csv").is_file()
    run = run_directory(invoke(runner, tmp_path, "denoise", "apply", "--model", str(trained), "--images", str(noisy)))
    assert not (run / "metrics.csv").exists() and (run / "images" / "model.png").is_file()


def test_an_interrupted_run_resumes_through_the_cli_to_the_same_weights(runner, tmp_path, photos, monkeypatch,
                                                                      request):
    # Ctrl-C at a terminal, also where the suite was started with SIGINT ignored (which training keeps ignoring)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    options = ("denoise", "train", "--data", str(photos), "--checkpoint-every", "2", "--steps", "4", "--no-baselines",
               *TINY)
    straight = run_directory(invoke(runner, tmp_path, *options))
    batch = PatchData.batch

    def interrupted_at_step_3(self, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the step under way ends with a checkpoint
        return batch(self, step)

    monkeypatch.setattr(PatchData, "batch", interrupted_at_step_3)
    result = invoke(runner, tmp_path, *options)
    assert result.exit_code == 130
    first = next(path for path in (tmp_path / "runs" / "denoise-train").iterdir() if path != straight)
    assert (first / "status").read_text().strip() == "interrupted" and not (first / "model.keras").exists()
    monkeypatch.setattr(PatchData, "batch", batch)
    resumed = run_directory(invoke(runner, tmp_path, "denoise", "train", "--resume", str(first)))
    assert resumed == first and (first / "status").read_text().strip() == "complete"
    assert [step for step, _ in LossLog(first / "losses").values("train.loss")] == [1, 2, 3, 4]
    for left, right in zip(keras.saving.load_model(straight / "model.keras").weights,
                           keras.saving.load_model(first / "model.keras").weights):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=1e-5, atol=1e-6)
    run_directory(invoke(runner, tmp_path, "denoise", "train", "--resume", str(first), "--steps", "5"))
    assert json.loads((first / "checkpoints" / "state.json").read_text())["step"] == 5


def test_the_autoencoder_inpaints_hpatches_style_pairs_and_colour_crops(runner, tmp_path, photos):
    run = run_directory(invoke(runner, tmp_path, "denoise", "train", "--model", "autoencoder", "--data", str(photos),
                               "--steps", "2", *TINY))
    rows = json.loads((run / "metrics.json").read_text())
    assert rows["task"] == "inpaint" and [row["method"] for row in rows["rows"]] == ["input", "model", "biharmonic"]
    assert json.loads((run / "config.json").read_text())["resolved"]["channels"] == 3


def test_training_on_hpatches_pairs_uses_the_noisy_twins(runner, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "pairs" / "i_seq").mkdir(parents=True)
    clean = (rng.random((10 * 32, 32)) * 255).astype(np.uint8)
    imageio.imwrite(tmp_path / "pairs" / "i_seq" / "ref.png", clean)
    imageio.imwrite(tmp_path / "pairs" / "i_seq" / "ref_noise.png", (clean // 2).astype(np.uint8))
    run = run_directory(invoke(runner, tmp_path, "denoise", "train", "--data", str(tmp_path / "pairs"), "--steps", "2",
                               "--batch-size", "4", "--validation-batches", "1", "--no-baselines"))
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["kind"] == "hpatches-pairs" and config["data"]["validation_patches"] == 2
    assert json.loads((run / "metrics.json").read_text())["images"] == 4


@pytest.mark.parametrize("arguments, message", [
    (("train", "--model", "resnet"), "Unknown model 'resnet'; expected one of unet, dncnn, dncnn-s, autoencoder"),
    (("train", "--corruption", "blur:3"), "Unknown corruption 'blur:3'"),
    (("train", "--patch-size", "30"), "--patch-size 30 is not a multiple of 4"),
    (("train", "--held-out", "nowhere.png"), "--held-out 'nowhere.png' not found; expected an image file"),
    (("train", "--loss", "bce"), "Loss 'bce' needs outputs in [0, 1]; model 'unet' has a linear output"),
    (("apply", "--model", "MODEL", "--images", "missing.png"), "Image 'missing.png' not found"),
    (("apply", "--model", "MODEL", "--images", "astronaut"),
     "Image 'astronaut' is in colour (3 channels); the model takes 1 (grey)"),
    (("apply", "--model", "MODEL", "--images", "camera", "--tile", "30"), "expected both multiples of 4"),
    (("apply", "--model", "MODEL", "--images", "camera", "--clean", "camera", "--corruption", "gaussian:0.1"),
     "Got both --clean and --corruption"),
    (("apply", "--model", "EMPTY_RUN", "--images", "camera"), "has no model.keras; expected a finished"),
    (("train", "--resume", "MODEL", "--model", "dncnn"), "--model dncnn differs from the run's stored unet"),
    (("train", "--resume", "MODEL", "--steps", "3"), "--steps 3 is fewer than the 4 steps"),
    (("train", "--resume", "EMPTY_RUN"), "has no stored settings and seed"),
])
def test_user_errors_are_one_line_with_a_nonzero_exit(runner, tmp_path, trained, arguments, message):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"command": "denoise-train"}))
    (empty / "status").write_text("failed: oops\n")
    arguments = [{"MODEL": str(trained), "EMPTY_RUN": str(empty)}.get(argument, argument) for argument in arguments]
    result = invoke(runner, tmp_path, "denoise", *arguments)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1
    assert not list((tmp_path / "runs").glob("*/*/model.keras"))


def test_malformed_options_are_rejected_before_any_work(runner, tmp_path):
    result = invoke(runner, tmp_path, "denoise", "train", "--data", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "does not exist" in result.output
    result = invoke(runner, tmp_path, "denoise", "train", "--channels", "2")
    assert result.exit_code == 2 and "'2' is not one of '1', '3'" in result.output
    assert not (tmp_path / "runs").exists()


def test_models_lists_every_model_with_its_parameters(runner, tmp_path):
    result = invoke(runner, tmp_path, "denoise", "models")
    assert result.exit_code == 0
    assert "59,777" in result.output and "556,096" in result.output and "autoencoder-dropout" in result.output
