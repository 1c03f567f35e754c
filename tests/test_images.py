"""Loading and saving images: every common layout and depth becomes float32 RGB in [0, 1]."""

import imageio.v3 as imageio
import numpy as np
import pytest

from deeprestore import images
from deeprestore.errors import DeepRestoreError


def test_grayscale_is_repeated_over_three_channels(tmp_path):
    imageio.imwrite(tmp_path / "grey.png", np.full((5, 6), 128, np.uint8))
    image = images.load_image(tmp_path / "grey.png")
    assert image.shape == (5, 6, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, 128 / 255, rtol=1e-6)


def test_sixteen_bit_images_keep_their_range(tmp_path):
    imageio.imwrite(tmp_path / "deep.png", np.full((4, 4), 65535 // 2, np.uint16))
    np.testing.assert_allclose(images.load_image(tmp_path / "deep.png"), 0.5, atol=1e-4)


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((3, 3, 4), np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)
    imageio.imwrite(tmp_path / "alpha.png", pixels)
    image = images.load_image(tmp_path / "alpha.png")
    np.testing.assert_allclose(image[0, 0], [1, 0, 0])
    np.testing.assert_allclose(image[1, 1], [1, 1, 1])


def test_bundled_samples_load_without_a_file():
    image = images.load_image("astronaut", size=64)
    assert image.shape == (64, 64, 3) and image.min() >= 0.0 and image.max() <= 1.0


def test_size_keeps_the_aspect_ratio():
    assert images.load_image("chelsea", size=90).shape == (60, 90, 3)
    assert images.resize(np.zeros((10, 20, 3), np.float32), (5, 7)).shape == (5, 7, 3)


def test_a_missing_file_names_what_was_expected():
    with pytest.raises(DeepRestoreError, match=r"'nowhere.png' not found; expected an image file"):
        images.load_image("nowhere.png")


def test_an_unreadable_file_is_a_clear_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DeepRestoreError, match="could not be read"):
        images.load_image(tmp_path / "broken.png")


def test_saved_images_round_trip_and_leave_no_partial_file(tmp_path, rng):
    image = rng.uniform(size=(7, 9, 3)).astype(np.float32)
    images.save_image(tmp_path / "out" / "image.png", image)
    np.testing.assert_allclose(images.load_image(tmp_path / "out" / "image.png"), image, atol=1 / 255)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["image.png"]


def test_list_images_expands_folders_and_list_files(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.rsplit("/", 1)[-1] for p in images.list_images(tmp_path)] == ["a.jpg", "b.png"]
    (tmp_path / "list.txt").write_text("one.png\n# a comment\n\ntwo.png  # inline\n")
    assert images.list_images(tmp_path / "list.txt") == ["one.png", "two.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepRestoreError, match="holds no images"):
        images.list_images(tmp_path / "empty")


def test_a_folder_where_one_image_is_expected_is_a_clear_error(tmp_path):
    with pytest.raises(DeepRestoreError, match="is a folder; expected one image file"):
        images.load_image(tmp_path)
