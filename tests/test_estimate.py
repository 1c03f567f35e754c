"""Dry-run estimates: FLOPs from layer shapes, memory that tiling bounds, a readable table."""

import pytest

from deeprestore.estimate import Estimate, estimate, format_estimates, format_seconds

RATE = 1e9  # a fixed rate keeps the tests independent of the machine


def test_flops_of_a_convolution_follow_the_formula(tiny):
    # preprocess (one operation per value) and conv1 (3x3x3 -> 8), forward and input gradient.
    height, width = 16, 24
    forward = height * width * 3 + 2 * height * width * 3 * 3 * 3 * 8
    assert estimate(tiny, ["conv1"], (height, width), rate=RATE).flops_per_step == pytest.approx(2 * forward)


def test_optimising_a_layer_counts_only_the_layers_above_it(tiny):
    # `invert --to pool1`: conv2 (3x3x8 -> 16) and relu2 on pool1's 8x12 grid; buffers of pool1's shape.
    forward = 2 * 8 * 12 * 3 * 3 * 8 * 16 + 8 * 12 * 16
    segment = estimate(tiny, ["relu2"], (16, 24), start="pool1", rate=RATE)
    whole = estimate(tiny, ["relu2"], (16, 24), rate=RATE)
    assert segment.flops_per_step == pytest.approx(2 * forward)
    assert segment.image_bytes == whole.image_bytes * (8 * 12 * 8) // (16 * 24 * 3)


def test_estimates_scale_with_the_image_size(tiny):
    small = estimate(tiny, ["relu2"], (64, 64), rate=RATE)
    large = estimate(tiny, ["relu2"], (128, 128), rate=RATE)
    assert large.flops_per_step == pytest.approx(4 * small.flops_per_step, rel=0.01)
    assert large.seconds_per_step == pytest.approx(4 * small.seconds_per_step, rel=0.01)
    fixed = small.weight_bytes + small.framework_bytes  # neither grows with the image
    assert 3.5 * (small.peak_bytes - fixed) < large.peak_bytes - fixed
    assert (estimate(tiny, ["relu2"], (64, 64), batch=2, rate=RATE).flops_per_step
            == pytest.approx(2 * small.flops_per_step))


def test_tiling_lowers_the_estimated_memory_but_not_the_work(tiny):
    whole = estimate(tiny, ["relu2"], (256, 256), rate=RATE)
    tiled = estimate(tiny, ["relu2"], (256, 256), tile=64, rate=RATE)
    assert tiled.tiles == 16 and whole.tiles == 1
    assert tiled.peak_bytes - tiled.framework_bytes < 0.5 * (whole.peak_bytes - whole.framework_bytes)
    assert tiled.activation_bytes == pytest.approx(whole.activation_bytes / 16, rel=0.01)
    assert tiled.flops_per_step == pytest.approx(whole.flops_per_step, rel=0.01)


def test_a_deeper_layer_costs_more(tiny):
    assert (estimate(tiny, ["relu2"], (64, 64), rate=RATE).flops_per_step
            > estimate(tiny, ["relu1"], (64, 64), rate=RATE).flops_per_step)


def test_the_table_has_a_row_per_estimate_and_says_how_it_was_made(tiny):
    rows = [("octave 1", estimate(tiny, ["relu2"], (32, 32), rate=RATE)),
            ("octave 2", estimate(tiny, ["relu2"], (64, 64), rate=RATE))]
    text = format_estimates(rows, steps=10)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["tiles", "peak"]
    assert lines[1].startswith("octave 1") and lines[2].startswith("octave 2")
    assert "Estimated peak memory" in text and "(10 steps per row)" in text and "GFLOP/s" in text
    total = (rows[0][1].seconds_per_step + rows[1][1].seconds_per_step) * 10
    assert f"total time about {format_seconds(total)}" in text


def test_rows_may_take_different_steps_and_peak_memory_includes_the_framework(tiny):
    from deeprestore.estimate import FRAMEWORK_BYTES

    item = estimate(tiny, ["relu2"], (32, 32), rate=RATE)
    assert item.framework_bytes in FRAMEWORK_BYTES.values()
    assert item.peak_bytes == item.framework_bytes + item.weight_bytes + item.activation_bytes + item.image_bytes
    text = format_estimates([("a", item), ("b", item)], steps=[10, 30])
    assert f"total time about {format_seconds(item.seconds_per_step * 40)} (10 + 30 steps)" in text


def test_long_totals_read_in_minutes_and_hours():
    assert [format_seconds(value) for value in (5, 95, 97 * 60, 3 * 3600)] == [
        "5 s", "1.6 min", "1.6 h", "3.0 h"]


def test_an_estimate_is_plain_data():
    item = Estimate(1, 0.5, 2.0, 0, 1, 0, 1, RATE)
    assert item.peak_bytes == 1 and item.seconds_per_step == 0.5
