"""The restoration registry: seed parameter counts, shapes on any size, and a few steps lowering each loss."""

import numpy as np
import pytest

from deeprestore.errors import DeepRestoreError
from deeprestore.restoration import models


def layer_parameters(model):
    return {layer.name: sum(int(np.prod(weight.shape)) for weight in layer.trainable_weights)
            for layer in model.layers if layer.trainable_weights}


def test_unet_matches_seed_004_layer_by_layer():
    model = models.create_model("unet", channels=1)
    assert layer_parameters(model) == {"conv1": 160, "conv2": 4640, "conv3": 8256, "conv4": 46144, "conv5": 577}
    assert models.trainable_parameters(model) == 59_777
    assert model.get_layer("concat").output.shape[-1] == 80
    assert model.get_layer("conv3").kernel.shape[:2] == (2, 2)


def test_dncnn_s_has_the_reports_556096_trainable_parameters():
    model = models.create_model("dncnn-s", channels=1)
    assert models.trainable_parameters(model) == 556_096
    assert model.count_params() - 556_096 == 15 * 2 * 64  # the moving means and variances of 15 batch norms
    convolutions = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convolutions) == 17 and [layer.use_bias for layer in convolutions].count(True) == 1


@pytest.mark.parametrize(("name", "last"), [("dncnn-s", "conv17"), ("dncnn", f"conv{models.DNCNN_DEPTH}")])
def test_dncnn_learns_the_noise_so_zero_noise_estimate_returns_the_input(name, last):
    model = models.create_model(name, channels=1)
    model.get_layer(last).kernel.assign(np.zeros(model.get_layer(last).kernel.shape, "float32"))
    images = np.random.default_rng(0).random((1, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(images, training=False)), images, atol=1e-6)


def test_the_cpu_sized_dncnn_is_the_paper_design_shallower_narrower_and_without_batch_norm():
    model = models.create_model("dncnn", channels=1)
    convolutions = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convolutions) == models.DNCNN_DEPTH and convolutions[1].filters == models.DNCNN_FILTERS
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers)
    depth, filters = models.DNCNN_DEPTH, models.DNCNN_FILTERS
    expected = 9 * filters + filters + (depth - 2) * (9 * filters * filters + filters) + 9 * filters
    assert models.trainable_parameters(model) == expected == 74_592


def test_the_dncnn_ablations_drop_batch_norm_or_the_residual():
    plain = models.dncnn(1, depth=4, filters=8, batch_norm=False)
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in plain.layers)
    assert all(plain.get_layer(f"conv{index}").use_bias for index in (1, 2, 3))  # biases in place of BN
    direct = models.dncnn(1, depth=4, filters=8, residual=False)
    assert "residual" not in [layer.name for layer in direct.layers] and direct.get_layer("conv4").use_bias
    direct.get_layer("conv4").kernel.assign(np.zeros(direct.get_layer("conv4").kernel.shape, "float32"))
    images = np.random.default_rng(0).random((1, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(direct(images, training=False)), 0.0, atol=1e-6)  # no input added back


def test_autoencoder_variants_follow_seed_001():
    def count(model, kind):
        return sum(layer.__class__.__name__ == kind for layer in model.layers)

    plain = models.create_model("autoencoder")
    assert (count(plain, "Conv2D"), count(plain, "MaxPooling2D"), count(plain, "UpSampling2D")) == (7, 2, 2)
    assert plain.layers[-1].activation.__name__ == "sigmoid"
    assert count(models.create_model("autoencoder-v2"), "Conv2D") == 13
    assert count(models.create_model("autoencoder-bn"), "BatchNormalization") == 6
    assert count(models.create_model("autoencoder-dropout"), "Dropout") == 6


@pytest.mark.parametrize("name", models.list_models())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_is_fully_convolutional(name, channels):
    model = models.create_model(name, channels=channels)
    images = np.random.default_rng(0).random((2, 12, 20, channels)).astype("float32")
    assert tuple(model(images, training=False).shape) == (2, 12, 20, channels)


@pytest.mark.parametrize("name", models.list_models())
def test_a_few_steps_lower_each_models_loss(name):
    spec = models.get_spec(name)
    model = models.create_model(name, channels=1, seed=0)
    # Adam for all: the U-Net's seed rate (SGD at 1e-5) moves too little in a few steps to measure.
    models.compile_model(model, spec.defaults.loss, "adam", 1e-3, output=spec.output)
    rng = np.random.default_rng(0)
    targets = rng.random((4, 16, 16, 1)).astype("float32") * 0.5 + 0.25
    inputs = np.clip(targets + rng.normal(0, 0.1, targets.shape), 0, 1).astype("float32")
    losses = [float(model.train_on_batch(inputs, targets, return_dict=True)["loss"]) for _ in range(8)]
    assert losses[-1] < losses[0]


def test_seeded_weights_are_reproducible_and_differ_between_seeds():
    first, again, other = (models.create_model("unet", seed=seed) for seed in (1, 1, 2))
    np.testing.assert_array_equal(first.get_layer("conv4").kernel, again.get_layer("conv4").kernel)
    assert not np.allclose(first.get_layer("conv4").kernel, other.get_layer("conv4").kernel)


def test_unknown_names_and_bad_settings_are_clear_errors():
    with pytest.raises(DeepRestoreError,
                       match="Unknown model 'resnet'; expected one of unet, dncnn, dncnn-s, autoencoder"):
        models.create_model("resnet")
    with pytest.raises(DeepRestoreError, match="takes 1 or 3 channels; got 2"):
        models.create_model("unet", channels=2)
    with pytest.raises(DeepRestoreError, match="Loss 'bce' needs outputs in \\[0, 1\\]"):
        models.compile_model(models.create_model("unet"), "bce", "adam", 1e-3, output="linear")
