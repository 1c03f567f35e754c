"""DeepDream: each objective rises over a few steps; option parsing; cycles, tiles, zoom, norms, dry run."""

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog
from deeprestore.optimise import Engine, Plan, Progress, normalised_descent, optimise
from deeprestore.parametrisations import FourierImage, normalised_image_descent
from deeprestore.recipes import dream as recipe
from deeprestore.settings import DreamSettings

TINY = ("dream", "--network", "tiny", "--size", "32", "--octaves", "1", "--steps", "3", "--jitter", "0")


@pytest.fixture(scope="module")
def tiny_with_head():
    from deeprestore.networks import create_network

    return create_network("tiny", weights="random", include_top=True, seed=0)


def invoke(tmp_path, *arguments):
    return CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments], catch_exceptions=False)


def run_of(result):
    assert result.exit_code == 0, result.output
    return pathlib.Path(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "terms, term",
    [
        (dict(layers=(("relu2", 1.0),)), "l2.relu2"),
        (dict(layers=(("relu1", 0.5), ("relu2", 2.0))), "l2.relu1"),
        (dict(channels=(("relu2", 3, 1.0),)), "channel.relu2.3"),
        (dict(neurons=(("conv2", 5, 1.0),)), "neuron.conv2.5"),
        (dict(classes=((4, 1.0),)), "class.4"),
        (dict(layers=(("relu2", 1.0),), guided=True), "guide.relu2"),
    ],
)
def test_each_objective_rises_over_a_few_steps(tiny_with_head, rng, terms, term):
    network = tiny_with_head
    objective = recipe.dream_objective(network, **terms)
    engine = Engine.for_objective(objective, network)
    images = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
    guide = np.random.default_rng(1).uniform(size=(1, 32, 32, 3)).astype(np.float32)
    targets = {}
    if terms.get("guided"):
        features = engine.probe.features(guide)["relu2"]
        targets = {"guide.relu2": features.reshape(-1, features.shape[-1])}
    before = engine(images, targets)[1][term]
    result, _ = optimise(engine, images, 4, normalised_descent(0.02), callbacks=[Progress(show=False)], targets=targets)
    assert engine(result, targets)[1][term] > before


@pytest.mark.parametrize("terms, term", [(dict(layers=(("relu2", 1.0),)), "l2.relu2"),
                                         (dict(channels=(("relu1", 2, 1.0),)), "channel.relu1.2")])
def test_a_few_fourier_steps_raise_the_objective(tiny, rng, terms, term):
    engine = Engine.for_objective(recipe.dream_objective(tiny, **terms), tiny)
    images = rng.uniform(0.1, 0.9, size=(2, 32, 32, 3)).astype(np.float32)
    parametrisation = FourierImage(images.shape[:3], decay_power=0.5)
    start = parametrisation.parameters_of(images)
    result, _ = optimise(engine, start, 4, normalised_image_descent(0.02, parametrisation),
                         Plan(parametrisation, jitter=2, seed=np.random.default_rng(0)),
                         callbacks=[Progress(show=False)])
    assert engine(parametrisation.images(result))[1][term] > engine(images)[1][term]


def test_weights_scale_each_term(tiny):
    objective = recipe.dream_objective(tiny, layers=(("relu1", 0.5), ("relu2", 2.0)), l2_decay=0.1)
    weights = {term.name: term.weight for term in objective.terms}
    assert weights == {"l2.relu1": -0.5, "l2.relu2": -2.0, "l2_decay.images": 0.1}


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(layers=("relu2:x",)), "--layer got 'relu2:x': weight 'x' is not float"),
        (dict(channels=("relu2",)), "--channel got 'relu2'; expected LAYER:INDEX[:WEIGHT]"),
        (dict(classes=("1:2:3",)), "--class got '1:2:3'; expected INDEX[:WEIGHT]"),
        (dict(cycle=("relu1:0.1",)), "--cycle got 'relu1:0.1'"),
        (dict(cycle=("relu1:0.1:2",), layers=("relu2",)), "--cycle names its own layers"),
        (dict(guide="chelsea", classes=("1",)), "--guide works at the L2 layers"),
    ],
)
def test_malformed_objective_options_are_refused(options, message):
    with pytest.raises(DeepRestoreError, match=message.replace("[", r"\[").replace("(", r"\(")):
        recipe.parse_terms(DreamSettings(network="tiny", **options))


def test_objective_options_parse_with_default_weights():
    terms = recipe.parse_terms(DreamSettings(layers=("relu2", "relu1:0.5"), channels=("relu2:3",), classes=("7:2",)))
    assert terms.layers == (("relu2", 1.0), ("relu1", 0.5))
    assert terms.channels == (("relu2", 3, 1.0),) and terms.classes == ((7, 2.0),) and terms.needs_head


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("--class", "10"), "Class index 10 is out of range for network 'tiny'; expected 0..9."),
        (("--channel", "relu2:16"), "Channel index 16 is out of range for layer 'relu2'"),
        (("--tile", "64"), "The tile (64 px) is larger than the image (32x32)"),
        (("--layer", "relu2", "--layer", "relu2:2"), "--layer names the same target twice"),
    ],
)
def test_invalid_combinations_get_clear_errors(tmp_path, arguments, message):
    result = invoke(tmp_path, *TINY, *arguments)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_a_malformed_option_is_refused_before_any_work(tmp_path):
    result = invoke(tmp_path, *TINY, "--layer", "relu2:heavy")
    assert result.exit_code == 2 and "weight 'heavy' is not float" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_weighted_sum_of_terms_logs_each_term_and_the_layer_norms(tmp_path):
    run = run_of(invoke(tmp_path, *TINY, "--layer", "relu1:0.5", "--channel", "relu2:3", "--class", "4",
                        "--save-every", "2", "--blur-every", "2", "--scaling", "0.99", "--l2-decay", "0.1"))
    losses = LossLog.read(run / "losses")
    for term in ("l2.relu1", "channel.relu2.3", "class.4", "l2_decay.images", "total"):
        assert len(losses[term]) == 3
    # relu1's mean square is its l2 term, logged once; the other layers get a monitor.
    assert "mean_square.relu1" not in losses and {"mean_square.relu2", "mean_square.fc3"} <= set(losses)
    norms = (run / "norms.csv").read_text().splitlines()
    assert norms[0] == "step,frame,octave,layer,norm"
    assert {line.split(",")[3] for line in norms[1:]} == {"relu1", "relu2", "fc3"} and len(norms) == 1 + 3 * 3
    assert (run / "norms.png").exists() and (run / "images" / "step_000002.png").exists()
    stages = json.loads((run / "config.json").read_text())["stages"]
    assert stages[0]["objective"].startswith("-0.5 * l2.relu1 + -1 * channel.relu2.3 + -1 * class.4")


def test_cycles_run_their_stages_in_order(tmp_path):
    run = run_of(invoke(tmp_path, *TINY, "--cycle", "relu1:0.01:2", "--cycle", "relu2:0.02:3", "--cycles", "2"))
    log = LossLog(run / "losses")
    assert [step for step, _ in log.values("l2.relu1")] == [1, 2, 6, 7]
    assert [step for step, _ in log.values("l2.relu2")] == [3, 4, 5, 8, 9, 10]
    assert len(log.values("total")) == 10
    stages = json.loads((run / "config.json").read_text())["stages"]
    assert [(stage["cycle"], stage["step_size"], stage["steps"]) for stage in stages] == [
        (1, 0.01, 2), (1, 0.02, 3), (2, 0.01, 2), (2, 0.02, 3)]


def test_guided_dreaming_caches_the_guide_features_and_keeps_the_guide(tmp_path):
    import h5py

    from deeprestore.images import load_image

    run = run_of(invoke(tmp_path, *TINY, "--guide", "chelsea", "--name", "guided"))  # a resubmission rereads them
    assert "guide.relu2" in LossLog.read(next(run.glob("items/*/losses")))
    np.testing.assert_allclose(load_image(run / "images" / "guide.png"), load_image("chelsea", 32), atol=1 / 255)
    with h5py.File(run / "shards" / "0-of-1" / "activations.h5") as file:
        assert any(name.startswith("guide") for name in file)
    assert not list(run.rglob("*.lock"))  # the task's owner is its cache's only writer


@pytest.mark.parametrize("mode", ["random", "contiguous", "overlap"])
def test_tiled_dreams_run_in_every_mode(tmp_path, mode):
    run = run_of(invoke(tmp_path, "dream", "--network", "tiny", "--size", "48", "--octaves", "2", "--steps", "2",
                        "--tile", "24", "--tile-mode", mode, "--tile-overlap", "8"))
    assert (run / "dream.png").exists() and (run / "status").read_text().strip() == "complete"


def test_the_zoom_loop_writes_frames_and_a_gif(tmp_path):
    import imageio.v3 as imageio

    run = run_of(invoke(tmp_path, *TINY, "--frames", "3", "--zoom", "1.2"))
    frames = sorted(path.name for path in (run / "frames").iterdir())
    assert frames == ["frame_001.png", "frame_002.png", "frame_003.png"]
    gif = imageio.imread(run / "dream.gif", index=None)
    assert gif.shape[:3] == (3, 32, 32)
    np.testing.assert_array_equal(imageio.imread(run / "frames" / "frame_003.png"), imageio.imread(run / "dream.png"))


def test_a_start_from_grey_without_clamping_runs(tmp_path):
    run = run_of(invoke(tmp_path, *TINY, "--start", "grey", "--no-clamp"))
    assert json.loads((run / "config.json").read_text())["settings"]["clamp"] is False


def test_dry_run_prints_estimates_and_creates_no_run(tmp_path):
    result = invoke(tmp_path, "dream", "--network", "tiny", "--size", "64", "--octaves", "2", "--tile", "32",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run" in result.output and "peak memory" in result.output and "octave 2 64x64" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_fourier_dream_writes_a_complete_run_with_every_regulariser(tmp_path):
    run = run_of(invoke(tmp_path, "dream", "--network", "tiny", "--size", "48", "--octaves", "2", "--steps", "2",
                        "--parametrisation", "fourier", "--jitter", "4", "--tile", "24", "--blur-every", "2",
                        "--scaling", "0.99", "--l2-decay", "0.1", "--save-every", "2"))
    assert (run / "status").read_text().strip() == "complete"
    for name in ("dream.png", "images/start.png", "images/octave_2.png", "images/step_000004.png", "norms.csv"):
        assert (run / name).exists(), name
    assert len(LossLog.read(run / "losses")["l2_decay.images"]) == 4
    settings = json.loads((run / "config.json").read_text())["settings"]
    assert settings["parametrisation"] == "fourier" and settings["decay_power"] == 0.5


def test_fourier_cycles_keep_the_spectrum_across_stages(tmp_path):
    run = run_of(invoke(tmp_path, *TINY, "--parametrisation", "fourier", "--cycle", "relu1:0.01:2",
                        "--cycle", "relu2:0.02:1"))
    assert len(LossLog(run / "losses").values("total")) == 3


def test_fourier_refuses_no_clamp(tmp_path):
    result = invoke(tmp_path, *TINY, "--parametrisation", "fourier", "--no-clamp")
    assert result.exit_code == 2 and "--no-clamp cannot apply with --parametrisation fourier" in result.output
    assert not (tmp_path / "runs").exists()


def test_the_guide_keeps_a_regular_grid_of_at_most_guide_positions():
    from deeprestore.recipes.dream import GUIDE_POSITIONS, _guide_grid

    activation = np.arange(224 * 224 * 2, dtype=np.float32).reshape(224, 224, 2)
    grid = _guide_grid(activation)
    assert grid.shape == (32 * 32, 2) and len(grid) <= GUIDE_POSITIONS
    np.testing.assert_array_equal(grid[:2], activation[0, [0, 7]])  # every 7th row and column
    small = activation[:16, :16]
    np.testing.assert_array_equal(_guide_grid(small), small.reshape(-1, 2))


def test_octaves_too_small_for_the_layers_are_left_out_with_a_notice(tmp_path):
    # 6, 4 and 3 px: pool2 (two 2x2 poolings) of 3x3 has no pixel left.
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "dream", "--network", "tiny", "--layer",
                                      "pool2", "--octaves", "3", "--size", "6", "--steps", "1"])
    run = pathlib.Path(str(run_of(result)).split()[-1])  # the last line also holds the progress bar's erasure
    assert "dreaming 2 of 3 octaves; 3x3 is too small for layers pool2" in result.output
    assert "dreaming 2 of 3 octaves" in (run / "notices.txt").read_text()
    assert json.loads((run / "config.json").read_text())["octave_sizes"] == [[4, 4], [6, 6]]


def test_a_bfloat16_dream_keeps_a_float32_image_and_raises_the_objective(tmp_path):
    run = run_of(invoke(tmp_path, *TINY, "--precision", "bfloat16", "--steps", "4", "--layer", "relu2"))
    assert json.loads((run / "config.json").read_text())["settings"]["precision"] == "bfloat16"
    values = LossLog.read(run / "losses")["l2.relu2"]
    assert (run / "dream.png").exists() and len(values) == 4 and values[-1] > values[0]


def test_mixed_precision_steps_match_float32_ones_roughly(rng):
    from deeprestore.networks import create_network
    from deeprestore.recipes.common import network_precision

    images = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
    results = {}
    for precision in ("float32", "bfloat16"):
        with network_precision(precision):
            network = create_network("tiny", weights="random", seed=0)
        engine = Engine.for_objective(recipe.dream_objective(network, layers=(("relu2", 1.0),)), network)
        result, _ = optimise(engine, images, 3, normalised_descent(0.02), callbacks=[Progress(show=False)])
        assert result.dtype == np.float32
        results[precision] = (result, engine(result)[1]["l2.relu2"], engine(images)[1]["l2.relu2"])
    assert results["bfloat16"][1] > results["bfloat16"][2]
    # bfloat16 keeps 8 bits of mantissa: the steps agree to a few percent of their size.
    step = np.abs(results["float32"][0] - images).mean()
    assert np.abs(results["bfloat16"][0] - results["float32"][0]).mean() < 0.2 * step
