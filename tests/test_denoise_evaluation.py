"""PSNR and SSIM against hand values, the classical methods, and tiled application equal to whole-image."""

import itertools
import math

import numpy as np
import pytest

from deeprestore.errors import DeepRestoreError
from deeprestore.restoration import evaluation, models
from deeprestore.restoration.apply import restore, tile_starts
from deeprestore.restoration.figures import restoration_figure


def test_psnr_of_a_uniform_error_of_a_tenth_is_20_db():
    clean = np.zeros((8, 8, 1), np.float32)
    assert evaluation.psnr(clean, clean + 0.1) == pytest.approx(20.0, abs=1e-5)
    assert evaluation.psnr(clean, clean + 0.01) == pytest.approx(40.0, abs=1e-4)
    assert math.isinf(evaluation.psnr(clean, clean))


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_of_flat_images_is_the_luminance_term(channels):
    # Flat images have no variance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 1)^2.
    first, second = np.full((16, 16, channels), 0.5), np.full((16, 16, channels), 0.25)
    expected = (2 * 0.5 * 0.25 + 1e-4) / (0.5**2 + 0.25**2 + 1e-4)
    assert evaluation.ssim(first, second) == pytest.approx(expected, rel=1e-6)
    assert evaluation.ssim(first, first) == pytest.approx(1.0)


def test_noise_level_estimates_the_deviation_of_white_noise():
    noisy = np.random.default_rng(0).normal(0.5, 0.1, (256, 256))
    assert evaluation.noise_level(noisy) == pytest.approx(0.1, rel=0.05)


def test_compare_puts_the_input_first_and_classical_denoisers_beat_the_noise(tmp_path):
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.2, 0.8, 64, dtype=np.float32), (64, 1))[..., None]
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    outputs = {name: [method(noisy)] for name, method in evaluation.classical_methods("denoise").items()}
    rows = evaluation.compare([clean], [noisy], outputs)
    assert [row["method"] for row in rows][:3] == ["input", "tv", "nl-means"]
    assert all(row["psnr"] > rows[0]["psnr"] + 3 for row in rows[1:])
    evaluation.save_table(tmp_path, rows, task="denoise")
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "method,psnr,ssim"
    assert "nl-means" in evaluation.format_table(rows)


def test_biharmonic_inpainting_fills_the_hole_of_a_smooth_image():
    clean = np.tile(np.linspace(0.2, 0.8, 32, dtype=np.float32), (32, 1))[..., None]
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    holed = np.where(mask[..., None], 0.0, clean).astype(np.float32)
    filled = evaluation.classical_methods("inpaint")["biharmonic"](holed, mask)
    assert np.abs(filled - clean).max() < 0.01


@pytest.mark.parametrize("name", models.list_models())
def test_tiled_restoration_equals_whole_image_restoration_with_enough_overlap(name):
    model = models.create_model(name, channels=1, seed=0)
    image = np.random.default_rng(0).random((90, 110, 1)).astype(np.float32)
    whole = restore(model, image, tile=128, overlap=0)
    tiled = restore(model, image, tile=64, overlap=24)
    assert whole.shape == tiled.shape == image.shape
    np.testing.assert_allclose(tiled, whole, atol=2e-5)


def test_small_overlap_differs_only_near_tile_borders():
    model = models.create_model("unet", channels=1, seed=0)
    image = np.random.default_rng(0).random((64, 64, 1)).astype(np.float32)
    whole = restore(model, image, tile=64, overlap=0)
    tiled = restore(model, image, tile=32, overlap=0)  # tiles meet at row and column 32
    differs = np.abs(tiled - whole)[..., 0] > 1e-5
    near_border = np.zeros_like(differs)
    near_border[24:40] = near_border[:, 24:40] = True
    assert differs.any() and not (differs & ~near_border).any()


def test_tiles_cover_the_length_and_start_on_the_pooling_grid():
    assert tile_starts(100, 128, 8) == [0]
    starts = tile_starts(200, 64, 12)
    assert starts[0] == 0 and starts[-1] == 200 - 64 and all(start % 4 == 0 for start in starts)
    assert all(later - earlier <= 64 - 2 * 12 for earlier, later in itertools.pairwise(starts))


def test_bad_tiling_and_channels_are_clear_errors():
    model = models.create_model("unet", channels=1)
    with pytest.raises(DeepRestoreError, match="expected both multiples of 4"):
        restore(model, np.zeros((8, 8, 1), np.float32), tile=30, overlap=4)
    with pytest.raises(DeepRestoreError, match="takes 1-channel images; got an image of shape \\(8, 8, 3\\)"):
        restore(model, np.zeros((8, 8, 3), np.float32))


def test_the_figure_is_a_png(tmp_path):
    grey = np.zeros((8, 8, 1), np.float32)
    path = restoration_figure(tmp_path / "figure.png", [[grey, grey, grey]] * 2, ["noisy", "denoised", "clean"])
    assert path.read_bytes()[:4] == b"\x89PNG"


class _FakeBm3d:
    """Stands in for the optional `bm3d` package: records the noise level it is given, returns a constant."""

    def __init__(self):
        self.calls = []

    def bm3d(self, image, sigma):
        self.calls.append(("grey", image.shape, sigma))
        return np.full(image.shape, 0.5)

    def bm3d_rgb(self, image, sigma):
        self.calls.append(("rgb", image.shape, sigma))
        return np.full(image.shape, 0.5)


def test_bm3d_is_a_baseline_when_its_package_is_installed(monkeypatch):
    import sys

    fake = _FakeBm3d()
    monkeypatch.setitem(sys.modules, "bm3d", fake)
    methods = evaluation.classical_methods("denoise")
    assert "bm3d" in methods and "bm3d" not in evaluation.classical_methods("inpaint")
    noisy = np.random.default_rng(0).normal(0.5, 0.1, (64, 64, 1)).astype(np.float32)
    restored = methods["bm3d"](noisy, None)
    assert restored.shape == (64, 64, 1) and restored.dtype == np.float32 and np.all(restored == 0.5)
    methods["bm3d"](np.repeat(noisy, 3, axis=-1), None)
    (kind, shape, sigma), (colour, colour_shape, _) = fake.calls
    assert (kind, shape, colour, colour_shape) == ("grey", (64, 64), "rgb", (64, 64, 3))
    assert sigma == pytest.approx(evaluation.noise_level(noisy))  # blind, like NL-means


def test_without_bm3d_it_is_left_out_and_the_score_table_says_so(monkeypatch, tmp_path):
    import sys
    import types

    from deeprestore.restoration import report

    monkeypatch.setitem(sys.modules, "bm3d", None)  # import bm3d raises ImportError
    assert not evaluation.has_bm3d() and "bm3d" not in evaluation.classical_methods("denoise")
    run = types.SimpleNamespace(path=tmp_path, images_dir=tmp_path / "images")
    model = models.dncnn(1, depth=3, filters=4)
    clean = np.full((1, 16, 16, 1), 0.5, np.float32)
    printed = []
    material = report.Material(clean + 0.01, clean, "denoise", whole=True)
    report.score(model, run, material, baselines=True, echo=printed.append)
    assert printed[-1] == evaluation.BM3D_NOTE
    printed.clear()
    report.score(model, run, material, baselines=False, echo=printed.append)
    assert evaluation.BM3D_NOTE not in printed
