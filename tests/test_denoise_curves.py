"""Learning curves: held-out PSNR/SSIM against steps and CPU time, resumed without gaps or repeats."""

import numpy as np
import pytest

from deeprestore.restoration import corruptions, curves, evaluation, models


@pytest.fixture
def clean():
    ramp = np.tile(np.linspace(0.2, 0.8, 16, dtype=np.float32), (16, 1))[..., None]
    return {"ramp": ramp, "flat": np.full((16, 12, 1), 0.4, np.float32)}


def test_a_curve_scores_the_model_and_the_baselines_on_the_same_noisy_images(tmp_path, clean):
    model = models.dncnn(1, depth=3, filters=4)
    curve = curves.LearningCurve(tmp_path, clean, corruptions.parse("gaussian:0.1"), seed=3)
    row = curve.record(model, 0)
    restored = np.clip(np.asarray(model(curve.inputs[0][None], training=False))[0], 0, 1)
    assert row["psnr.ramp"] == pytest.approx(evaluation.psnr(clean["ramp"], restored), abs=1e-4)
    assert row["psnr"] == pytest.approx((row["psnr.ramp"] + row["psnr.flat"]) / 2)
    noisy = evaluation.psnr(clean["ramp"], curve.inputs[0])
    assert curve.baselines["input"][0] == pytest.approx((noisy + evaluation.psnr(clean["flat"], curve.inputs[1])) / 2)
    assert {"input", "tv", "nl-means"} <= set(curve.baselines)
    curve.record(model, 5)
    rows = curves.read_rows(tmp_path / curves.CURVE_FILE)
    assert [r["step"] for r in rows] == [0, 5] and rows[1]["cpu_seconds"] >= rows[0]["cpu_seconds"] >= 0
    assert list(rows[0])[:4] == ["step", "cpu_seconds", "psnr", "ssim"]
    assert curve.plot().is_file() and (tmp_path / "baselines.csv").is_file()


def test_a_resumed_curve_drops_rows_past_the_checkpoint_and_continues_the_cpu_time(tmp_path, clean):
    model = models.dncnn(1, depth=3, filters=4)
    first = curves.LearningCurve(tmp_path, clean, corruptions.parse("gaussian:0.1"), baselines=False)
    for step in (0, 2, 4):
        first.record(model, step)
    before = curves.read_rows(tmp_path / curves.CURVE_FILE)
    resumed = curves.LearningCurve(tmp_path, clean, corruptions.parse("gaussian:0.1"), baselines=False, start=2)
    assert [row["step"] for row in resumed.rows] == [0, 2]
    assert resumed.training_seconds() >= before[1]["cpu_seconds"]
    resumed.record(model, 4)
    assert [row["step"] for row in curves.read_rows(tmp_path / curves.CURVE_FILE)] == [0, 2, 4]


def test_the_curve_leaves_its_own_evaluations_out_of_the_training_time(tmp_path, clean):
    # construction; record at 0 (3 s of evaluation); 5 s of training, then record at 1
    ticks = iter([10.0, 10.0, 10.0, 13.0, 18.0, 18.0, 19.0])
    curve = curves.LearningCurve(tmp_path, clean, corruptions.parse("gaussian:0.1"), baselines=False,
                                 clock=lambda: next(ticks))
    model = models.dncnn(1, depth=3, filters=4)
    assert curve.record(model, 0)["cpu_seconds"] == 0.0
    assert curve.record(model, 1)["cpu_seconds"] == 5.0
