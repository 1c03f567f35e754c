"""Tests for loss logs: CSV rows step by step, survival without close, plots, NaN, file names."""

import math

import numpy as np
import pytest

from deeprestore.losslog import LossLog, plot_curves, safe_file_stem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def log(tmp_path):
    """A loss log in `tmp_path`, closed after the test so no file handle outlives it."""
    with LossLog(tmp_path) as log:
        yield log


def test_each_term_gets_a_csv_with_one_row_per_step(tmp_path, log):
    log.log(0, {"total": 3.0, "l2.block4_conv3": 1.5})
    log.log(1, {"total": 2.0, "l2.block4_conv3": 0.25})
    log.close()

    assert (tmp_path / "total.csv").read_text() == "step,value\n0,3.0\n1,2.0\n"
    assert (tmp_path / "l2.block4_conv3.csv").read_text() == "step,value\n0,1.5\n1,0.25\n"
    assert log.values("total") == [(0, 3.0), (1, 2.0)]


def test_context_values_become_columns_between_step_and_value(tmp_path):
    with LossLog(tmp_path) as log:
        log.log(0, {"total": 1.0}, octave=1, scale=0.5)
        log.log(1, {"total": 0.5}, scale=0.5, octave=2)

    assert (tmp_path / "total.csv").read_text() == "step,octave,scale,value\n0,1,0.5,1.0\n1,2,0.5,0.5\n"


def test_logging_a_term_with_different_context_columns_is_refused(tmp_path, log):
    log.log(0, {"total": 1.0}, octave=1)

    with pytest.raises(ValueError, match="context columns"):
        log.log(1, {"total": 1.0})


def test_rows_are_on_disk_without_close_as_after_a_kill(tmp_path, log):
    log.log(0, {"total": 4.0})
    log.log(1, {"total": 3.0})

    # Read through a separate handle while the log is still open, as after the process died.
    assert LossLog.read(tmp_path)["total"].tolist() == [4.0, 3.0]
    assert (tmp_path / "total.csv").read_text().splitlines()[-1] == "1,3.0"


def test_a_reopened_log_appends_after_the_existing_rows(tmp_path):
    first = LossLog(tmp_path)
    first.log(0, {"total": 2.0}, octave=1)
    first.close()

    second = LossLog(tmp_path)
    second.log(1, {"total": 1.0}, octave=1)
    second.close()

    assert (tmp_path / "total.csv").read_text() == "step,octave,value\n0,1,2.0\n1,1,1.0\n"


def test_a_row_cut_short_by_a_kill_is_skipped_and_the_next_row_starts_cleanly(tmp_path, log):
    (tmp_path / "total.csv").write_text("step,value\n0,2.0\n1,")

    log.log(2, {"total": 1.0})

    assert log.values("total") == [(0, 2.0), (2, 1.0)]


def test_nan_values_are_recorded_as_nan(tmp_path, log):
    log.log(0, {"total": float("nan")})
    log.log(1, {"total": np.float32(1.0)})

    assert (tmp_path / "total.csv").read_text() == "step,value\n0,nan\n1,1.0\n"
    values = LossLog.read(tmp_path)["total"]
    assert math.isnan(values[0]) and values[1] == 1.0
    assert log.plot().read_bytes().startswith(PNG_MAGIC)


def test_term_names_become_safe_file_names_keeping_dots(tmp_path, log):
    log.log(0, {"module.pool1_to_conv1_2": 1.0, "gram/block1 conv1": 2.0, "..": 3.0})

    names = sorted(path.name for path in tmp_path.glob("*.csv"))
    assert names == ["_...csv", "gram_block1_conv1.csv", "module.pool1_to_conv1_2.csv"]
    assert log.values("gram/block1 conv1") == [(0, 2.0)]
    assert safe_file_stem("a/../b") == "a_.._b"


def test_two_terms_sharing_a_file_name_are_refused(tmp_path, log):
    with pytest.raises(ValueError, match="would share"):
        log.log(0, {"a/b": 1.0, "a_b": 2.0})


def test_read_returns_every_term_as_an_array(tmp_path, log):
    for step in range(3):
        log.log(step, {"total": 10.0 - step, "tv": 0.1 * step})

    logged = LossLog.read(tmp_path)

    assert sorted(logged) == ["total", "tv"]
    assert logged["total"].dtype == np.float64
    np.testing.assert_allclose(logged["tv"], [0.0, 0.1, 0.2])


def test_plot_writes_a_png_with_a_panel_per_term(tmp_path):
    with LossLog(tmp_path / "losses") as log:
        for step in range(5):
            log.log(step, {"total": 1.0 / (step + 1), "l2.block1_conv1": step - 2.0}, octave=1 + step // 3)

    path = log.plot()

    assert path == tmp_path / "losses" / "losses.png"
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert LossLog(tmp_path / "empty").plot(tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_curves_writes_a_png(tmp_path):
    curves = {"psnr": ([1, 2, 3], [20.0, 22.0, 23.5]), "noise": ([1, 2, 3], [25.0, 25.0, 25.0])}

    path = plot_curves(tmp_path / "figures" / "psnr.png", curves, "PSNR", "epoch", "dB")

    assert path.read_bytes().startswith(PNG_MAGIC)
