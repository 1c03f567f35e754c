"""The backend-specific module: input gradients against closed forms, on TensorFlow and on JAX."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from deeprestore import backend


def test_value_and_gradient_matches_the_closed_form(rng):
    images = rng.uniform(size=(2, 5, 4, 3)).astype(np.float32)

    def function(x):
        value = keras.ops.sum(keras.ops.square(x)) + 3.0 * keras.ops.sum(x)
        return value, {"mean": keras.ops.mean(x)}

    loss, aux, gradient = backend.value_and_gradient(function)(images)
    np.testing.assert_allclose(loss, np.sum(images**2) + 3 * np.sum(images), rtol=1e-5)
    np.testing.assert_allclose(aux["mean"], images.mean(), rtol=1e-5)
    np.testing.assert_allclose(gradient, 2 * images + 3, rtol=1e-5)


def test_gradient_through_a_network_matches_finite_differences(tiny, rng):
    images = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
    model = tiny.model

    def function(x):
        return keras.ops.sum(keras.ops.square(model(x))), {}

    step = backend.value_and_gradient(function, model.variables)
    _, _, gradient = step(images)
    direction = rng.normal(size=images.shape).astype(np.float32)
    epsilon = 1e-2
    plus, _, _ = step(images + epsilon * direction)
    minus, _, _ = step(images - epsilon * direction)
    numeric = (plus - minus) / (2 * epsilon)
    np.testing.assert_allclose(np.sum(gradient * direction), numeric, rtol=2e-2)


def test_compiled_forward_returns_numpy_dicts(tiny, rng):
    images = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
    forward = backend.compiled(lambda x: {"out": tiny.model(x)}, tiny.model.variables)
    result = forward(images)
    assert isinstance(result["out"], np.ndarray)
    np.testing.assert_allclose(result["out"], keras.ops.convert_to_numpy(tiny.model(images)), rtol=1e-5)


def test_device_and_versions_describe_the_backend():
    assert backend.device()
    assert backend.versions()["backend"] == backend.name()


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_jax_backend_gives_the_same_gradients_as_tensorflow(tiny, rng, tmp_path):
    images = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
    weights_file = str(tmp_path / "tiny.weights.h5")
    tiny.model.save_weights(weights_file)
    np.save(weights_file + ".images.npy", images)

    def function(x):
        return keras.ops.sum(keras.ops.square(tiny.model(x))), {}

    expected = backend.value_and_gradient(function, tiny.model.variables)(images)[2]
    script = textwrap.dedent(f"""
        import json, keras, numpy as np
        from deeprestore import backend
        from deeprestore.networks import create_network
        assert keras.backend.backend() == "jax"
        network = create_network("tiny", weights={weights_file!r})
        images = np.load({weights_file + '.images.npy'!r})
        def function(x):
            return keras.ops.sum(keras.ops.square(network.model(x))), {{"mean": keras.ops.mean(x)}}
        loss, aux, gradient = backend.value_and_gradient(function, network.model.variables)(images)
        lbfgs = None
        if backend.device_lbfgs_available():  # optax's L-BFGS on the device against scipy's on the host
            from deeprestore import objectives, optimise as module
            from deeprestore.optimise import LBFGS, Engine, Progress, optimise
            host = module._optimise_lbfgs
            hosted = []
            module._optimise_lbfgs = lambda *args: hosted.append(1) or host(*args)
            engine = Engine.for_objective(objectives.l2("conv2") + 0.1 * objectives.total_variation(2.0), network)
            quiet = Progress(show=False, notify=lambda message: None)
            ends = {{(bounds, device): optimise(engine, images, 8, LBFGS(bounds, tolerance=0.0, on_device=device),
                                                callbacks=[quiet])[0]
                    for bounds in (None, (0.0, 1.0)) for device in (0, 1)}}
            lbfgs = {{f"{{bounds}} {{device}}": [engine(end)[0], float(end.min()), float(end.max())]
                     for (bounds, device), end in ends.items()}}
            lbfgs.update(start=engine(images)[0], hosted=len(hosted))
        print(json.dumps({{"gradient": gradient.tolist(), "device": backend.device(),
                          "steps_per_call": backend.steps_per_call(16), "lbfgs": lbfgs}}))
    """)
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=240
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(result["gradient"]), expected, rtol=1e-4, atol=1e-6)
    # JAX on a CPU runs one step per compiled call: a convolution's gradient inside XLA's loop is 3x slower
    assert result["steps_per_call"] == 1 and backend.steps_per_call(16) == (1 if backend.name() == "jax" and
                                                                            "cpu" in backend.device() else 16)
    lbfgs = result["lbfgs"]
    if lbfgs is not None:  # optax installed: unbounded, the device's L-BFGS reaches scipy's objective
        assert lbfgs["hosted"] == 2, lbfgs  # scipy's runs only went through the host's loop
        assert lbfgs["None 1"][0] == pytest.approx(lbfgs["None 0"][0], rel=1e-3), lbfgs
        assert lbfgs["None 1"][0] < 0.5 * lbfgs["start"], lbfgs
        low, high = lbfgs["(0.0, 1.0) 1"][1:]  # bounded, it stays in the box and descends
        assert low >= 0.0 and high <= 1.0 and lbfgs["(0.0, 1.0) 1"][0] < 0.5 * lbfgs["start"], lbfgs
