"""The one backend-specific module: gradients with respect to an input, devices, seeding.

Everything else in deeprestore is written with `keras` and `keras.ops` and runs on any backend that
Keras supports. What Keras does not abstract, computing the gradient of a scalar with respect to an
input image inside a compiled function, lives here with one branch per backend. Nothing else imports
tensorflow or jax.
"""

import keras
import numpy as np

from deeprestore.errors import DeepRestoreError

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def name():
    """Returns the name of the active Keras backend, e.g. `"tensorflow"`."""
    return keras.backend.backend()


def check_supported():
    """Raises a `DeepRestoreError` when the active backend cannot compute input gradients here."""
    if name() not in SUPPORTED_BACKENDS:
        raise DeepRestoreError(
            f"Keras backend '{name()}' is not supported; expected one of {', '.join(SUPPORTED_BACKENDS)} "
            "(set KERAS_BACKEND)."
        )


def device():
    """Returns a short description of the device computations run on, e.g. `"cpu"` or `"gpu:NVIDIA H100"`."""
    if name() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            return f"gpu:{details.get('device_name', gpus[0].name)}"
        return "cpu"
    if name() == "jax":
        import jax

        first = jax.devices()[0]
        return f"{first.platform}:{getattr(first, 'device_kind', first.platform)}"
    return "cpu"


def versions():
    """Returns the versions of the backend libraries, for run configs."""
    found = {"keras": keras.__version__, "backend": name(), "numpy": np.__version__}
    if name() == "tensorflow":
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    elif name() == "jax":
        import jax

        found["jax"] = jax.__version__
    return found


def value_and_gradient(function, variables=()):
    """Compiles `function` and the gradient of its value with respect to its first argument.

    `function(images, *args)` returns `(loss, aux)`: a scalar tensor and a dict of tensors (per-term
    values to log). It may call Keras models; the values of `variables` (the models' weights, which
    stay fixed) are passed to the compiled function as arguments rather than baked in as constants,
    so large networks compile quickly and share memory.

    Args:
        function: `(images, *args) -> (loss, aux)`, written with `keras.ops`.
        variables: Keras variables that `function` reads (for JAX, where state must be explicit).

    Returns:
        A callable `(images, *args) -> (loss, aux, gradient)` returning numpy arrays, with the
        gradient the same shape as `images`.
    """
    check_supported()
    if name() == "tensorflow":
        return _tensorflow_value_and_gradient(function)
    return _jax_value_and_gradient(function, tuple(variables))


def _tensorflow_value_and_gradient(function):
    import tensorflow as tf

    # Octaves, scales and tiles change the input shape on purpose; TensorFlow's retracing warnings
    # about it say nothing a user can act on.
    tf.get_logger().setLevel("ERROR")

    @tf.function(reduce_retracing=True)
    def step(images, *args):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss, aux = function(images, *args)
        return loss, aux, tape.gradient(loss, images)

    def call(images, *args):
        loss, aux, gradient = step(tf.convert_to_tensor(images, tf.float32), *args)
        return float(loss), {key: value.numpy() for key, value in aux.items()}, gradient.numpy()

    return call


def _jax_value_and_gradient(function, variables):
    import jax

    def pure(values, images, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return function(images, *args)

    step = jax.jit(jax.value_and_grad(pure, argnums=1, has_aux=True))

    def call(images, *args):
        values = [variable.value for variable in variables]
        (loss, aux), gradient = step(values, np.asarray(images, np.float32), *args)
        return float(loss), {key: np.asarray(value) for key, value in aux.items()}, np.asarray(gradient)

    return call


def compiled(function, variables=()):
    """Compiles a forward-only `function(*args) -> tensors` (features of fixed images, for instance).

    Args:
        function: `(*args) -> tensor or dict of tensors`, written with `keras.ops`.
        variables: Keras variables that `function` reads (see `value_and_gradient`).

    Returns:
        A callable with the same arguments returning numpy arrays (or a dict of them).
    """
    check_supported()
    if name() == "tensorflow":
        import tensorflow as tf

        step = tf.function(function, reduce_retracing=True)
    else:
        import jax

        variables = tuple(variables)

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(*args)

        jitted = jax.jit(pure)

        def step(*args):
            return jitted([variable.value for variable in variables], *args)

    def call(*args):
        return keras.tree.map_structure(np.asarray, step(*args))

    return call
