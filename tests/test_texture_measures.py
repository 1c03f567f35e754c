"""The texture measures against scipy and against images whose structure is known."""

import numpy as np
import pytest
import scipy.signal

from deeprestore.texture_measures import autocorrelation, colour_deviation, structure_distance


def stripes(height, width, period, vertical=True):
    """Grey cosine stripes of `period` pixels, varying along the columns (`vertical` stripes) or the rows."""
    positions = np.arange(width if vertical else height)
    profile = 0.5 + 0.4 * np.cos(2 * np.pi * positions / period)
    grey = np.broadcast_to(profile[None, :] if vertical else profile[:, None], (height, width))
    return np.repeat(grey[..., None], 3, axis=-1)


def test_autocorrelation_equals_scipys_correlation_over_the_overlap():
    image = np.random.default_rng(0).uniform(size=(20, 27, 3))
    grey = image.mean(axis=-1)
    centred = grey - grey.mean()
    full = scipy.signal.correlate2d(centred, centred, mode="full")  # lag (0, 0) at (19, 26)
    lags = np.arange(-5, 6)
    overlaps = np.outer(20 - np.abs(lags), 27 - np.abs(lags))
    reference = full[19 + lags[:, None], 26 + lags[None, :]] / overlaps
    np.testing.assert_allclose(autocorrelation(image, 5), reference / reference[5, 5], atol=1e-12)


def test_the_autocorrelation_of_stripes_peaks_at_their_period_across_them():
    correlation = autocorrelation(stripes(48, 64, period=8), max_lag=12)
    centre = 12
    assert correlation[centre, centre + 8] == pytest.approx(1.0, abs=1e-9)  # one period across
    assert correlation[centre, centre + 4] == pytest.approx(-1.0, abs=1e-9)  # half a period: opposite phase
    np.testing.assert_allclose(correlation[:, centre], 1.0, atol=1e-9)  # along the stripes nothing changes


def test_structure_distance_is_zero_for_the_same_texture_and_large_for_turned_stripes():
    vertical, horizontal = stripes(64, 64, 8), stripes(64, 64, 8, vertical=False)
    shifted = np.roll(vertical, 3, axis=1)  # the same texture elsewhere
    noise = np.random.default_rng(1).uniform(size=(64, 64, 3))
    assert structure_distance(vertical, shifted, 16) < 1e-9
    # Turned stripes correlate where the source anti-correlates: farther than structureless noise.
    assert structure_distance(vertical, horizontal, 16) > 0.9 > structure_distance(vertical, noise, 16) > 0.5


def test_colour_deviation_is_zero_for_grey_and_counts_8_bit_steps():
    grey = np.full((4, 4, 3), 0.5)
    red = grey + np.array([30, -15, -15]) / 255
    assert colour_deviation(grey) == 0.0
    assert colour_deviation(red) == pytest.approx(20.0)


def test_a_lag_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match="max_lag from 0 to 7"):
        autocorrelation(np.zeros((8, 10, 3)), 8)
