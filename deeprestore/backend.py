"""The one backend-specific module: gradients with respect to an input, devices, data parallelism,
TensorBoard event files.

Everything else in deeprestore is written with `keras` and `keras.ops` and runs on any backend that
Keras supports. What Keras does not abstract, computing the gradient of a scalar with respect to an
input image inside a compiled function and spreading a training step over several devices, lives here
with one branch per backend. Nothing else imports tensorflow or jax, but for `distributed`, which
starts each engine's multi-process runtime (one training over several machines).
"""

import contextlib
import functools
import weakref

import keras
import numpy as np

from deeprestore import distributed
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


def is_out_of_memory(error):
    """Whether `error` is the backend running out of memory: TensorFlow's `ResourceExhaustedError`, or
    an XLA runtime error with status RESOURCE_EXHAUSTED (JAX)."""
    return type(error).__name__ == "ResourceExhaustedError" or (
        type(error).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in str(error))


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


def gradient(function, variables):
    """The value of `function(variables)` and its gradient, for use inside a compiled function.

    Unlike `value_and_gradient` this compiles nothing: it is a traceable step of a larger function
    (the optimisation loop of `optimise`, which differentiates, steps and constrains in one call).

    Args:
        function: `variables -> (loss, aux)`: a scalar tensor and a dict of tensors, in `keras.ops`.
        variables: The tensor to differentiate with respect to.

    Returns:
        `(loss, aux, gradient)` as tensors, the gradient the shape of `variables`.
    """
    if name() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(variables)
            loss, aux = function(variables)
        return loss, aux, tape.gradient(loss, variables)
    import jax

    (loss, aux), found = jax.value_and_grad(function, has_aux=True)(variables)
    return loss, aux, found


def sequential_loop(lower, upper, body, initial):
    """`keras.ops.fori_loop` whose iterations run strictly one after the other, inside a compiled function.

    TensorFlow's while loop otherwise starts up to ten iterations at once when they do not depend on
    each other; the tiles of a step would then all hold their activations together, and memory would
    no longer be bounded by the tile. JAX's loop is sequential already.
    """
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.while_loop(lambda index, carry: index < upper, lambda index, carry: (index + 1, body(index, carry)),
                             (tf.constant(lower), initial), parallel_iterations=1)[1]
    return keras.ops.fori_loop(lower, upper, body, initial)


def steps_per_call(steps):
    """How many optimisation steps one compiled call should loop over: `steps`, but 1 under JAX on a CPU.

    XLA's CPU compiler hands a convolution whose input gradient is taken inside a loop (`fori_loop`, a
    while loop in HLO) a filter in another layout (`01oi`) than at the top level of a function, and its
    fast convolution library (YNNPACK) then does not take it: the generic convolution that runs instead
    made a VGG16 dream step 3.3 times as much CPU time inside the loop as without it (no XLA flag changed
    that; `benchmarks/backend_cpu.py`). One step per call, with no loop around it, is as fast as
    TensorFlow's or faster. Elsewhere (TensorFlow, JAX on a GPU) several steps share one call, so that
    the host is visited once per chunk.
    """
    if name() == "jax":
        import jax

        if jax.default_backend() == "cpu":
            return 1
    return steps


def device_lbfgs_available():
    """Whether L-BFGS can run on the device, in compiled chunks of iterations: JAX with optax installed."""
    import importlib.util

    return name() == "jax" and importlib.util.find_spec("optax") is not None


@functools.cache
def _lbfgs(history):
    import optax

    # optax's default line search: zoom (Nocedal & Wright's algorithm 3.5, strong Wolfe conditions), at most
    # 20 evaluations, as scipy's L-BFGS-B (`maxls`).
    return optax.lbfgs(memory_size=history)


def lbfgs_state(variables, history):
    """The initial state of optax's L-BFGS keeping `history` correction pairs, as numpy arrays."""
    import jax.numpy as jnp

    return keras.tree.map_structure(np.asarray, _lbfgs(history).init(jnp.asarray(variables, jnp.float32)))


def lbfgs_iterations(objective, names, history, capacity, penalty=None):
    """A traceable function running up to `capacity` iterations of optax's L-BFGS (JAX only).

    Args:
        objective: `(variables, targets) -> (total, {term: value})`, in `keras.ops`.
        names: The terms to log, in order.
        history: Correction pairs kept.
        capacity: Most iterations one call runs (1: no loop around the iteration, see `steps_per_call`).
        penalty: `variables -> scalar` added to the scaled objective the optimiser sees (not to the log's
            terms), or None.

    Returns:
        `(variables, state, count, divisor, targets) -> (variables, state, rows)`: `count` iterations on the
        objective divided by `divisor`; row `i` holds iteration `i`'s terms (in the order of `names`), its
        total and whether both the total and the gradient were finite (1.0 or 0.0).
    """
    import jax
    import jax.numpy as jnp
    import optax

    optimizer = _lbfgs(history)

    def run(variables, state, count, divisor, targets):
        def scaled(values):
            value = objective(values, targets)[0] / divisor
            return value if penalty is None else value + penalty(values)

        value_and_gradient = optax.value_and_grad_from_state(scaled)

        def body(index, carry):
            variables, state, rows = carry
            value, gradient = value_and_gradient(variables, state=state)  # the line search's last, reused
            updates, state = optimizer.update(gradient, state, variables, value=value, grad=gradient,
                                              value_fn=scaled)
            variables = optax.apply_updates(variables, updates)
            total, terms = objective(variables, targets)  # a forward pass for the log's terms
            finite = jnp.isfinite(total) & jnp.all(jnp.isfinite(gradient))
            row = jnp.stack([*(jnp.asarray(terms[name], jnp.float32) for name in names), total,
                             finite.astype(jnp.float32)])
            return variables, state, rows.at[index].set(row)

        rows = jnp.zeros((capacity, len(names) + 2), jnp.float32)
        if capacity == 1:
            return body(0, (variables, state, rows))
        return jax.lax.fori_loop(0, count, body, (variables, state, rows))

    return run


def compiled(function, variables=(), static_shapes=False):
    """Compiles `function(*args) -> tensors` (features of fixed images, or a whole optimisation chunk).

    Args:
        function: `(*args) -> tensor or dict of tensors`, written with `keras.ops`.
        variables: Keras variables that `function` reads (see `value_and_gradient`).
        static_shapes: Whether `function` needs the static shapes of its arguments (a tiling does):
            TensorFlow then traces once per input shape instead of generalising to unknown sizes, as
            JAX always does.

    Returns:
        A callable with the same arguments returning numpy arrays (or a dict of them).
    """
    check_supported()
    if name() == "tensorflow":
        import tensorflow as tf

        step = tf.function(function, reduce_retracing=not static_shapes, autograph=not static_shapes)
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


def parallel_devices():
    """Names of the devices data-parallel training can use: the GPUs, or the CPUs where there are none.

    On TensorFlow these are its logical devices (`GPU:0`, `GPU:1`, ...); on JAX those of its default
    platform (`gpu:0`, ...); in a job of several processes (see `distributed`) those of every process: on JAX
    numbered globally, on TensorFlow each process's own prefixed with its task (`task1/GPU:0`; every
    worker of a `MultiWorkerMirroredStrategy` has as many).
    """
    check_supported()
    if name() == "tensorflow":
        import tensorflow as tf

        found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        local = tuple(logical.name.split("device:")[-1] for logical in found if "/task:" not in logical.name
                      or f"/task:{distributed.process_index()}/" in logical.name)
        if distributed.process_count() > 1:
            return tuple(f"task{task}/{device}" for task in range(distributed.process_count()) for device in local)
        return local
    import jax

    return tuple(f"{accelerator.platform}:{accelerator.id}" for accelerator in jax.devices())


def check_devices(devices=1):
    """The names of the devices `--devices` asks for, checked without building anything (a command calls
    it before it creates its run, so a refused count leaves no run directory behind).

    Args:
        devices: How many devices to use (the first ones of `parallel_devices()`), or `"all"`.

    Returns:
        The device names, `(device(),)` for one.

    Raises:
        DeepRestoreError: More devices asked for than there are, or in a job of several processes fewer
            than all of them.
    """
    processes = distributed.process_count()
    if processes > 1:
        available = parallel_devices()
        if devices not in ("all", len(available)):
            raise DeepRestoreError(f"--devices {devices} in a job of {processes} processes with {len(available)} "
                                   f"devices in all; a job of several processes trains on every device: expected all "
                                   f"(or {len(available)}).")
        return available
    available = parallel_devices() if devices != 1 else ()
    count = len(available) if devices == "all" else int(devices)
    if count < 1 or count > max(len(available), 1):
        raise DeepRestoreError(f"--devices {devices} asks for {count} devices; found {len(available)} "
                               f"({', '.join(available)}). Expected 1 to {len(available)}, or all.")
    return available[:count] if count > 1 else (device(),)


@functools.cache
def _mirrored_strategy(devices):
    # One strategy per device set and process: two strategies over the same devices number their
    # collective operations alike, and the second one's all-reduce then meets the first one's.
    import tensorflow as tf

    return tf.distribute.MirroredStrategy([f"/device:{device}" for device in devices])


@functools.cache
def _data_parallel_layout():
    """`keras.distribution.DataParallel` that splits a batch over the devices only where it divides evenly.

    Keras's layout shards every array's first axis over the devices, and JAX refuses an array whose
    batch does not split evenly (`IndivisibleError`): a validation set of 6 in batches of 4 on 4
    devices failed on its last batch of 2, and so would a prediction of any size in a callback. Such a
    batch is replicated instead: every device computes the whole of it, so its values are those of one
    device. Training batches are checked to divide (`DataParallel.check_batch`) and stay split. In a
    job of several processes the count is of this process's devices (a process's batch is its slice of
    the global one), and a replicated batch must be the same on every process, as validation's is.
    """
    import jax

    class DataParallelLayout(keras.distribution.DataParallel):
        def __init__(self, devices, **options):
            super().__init__(devices=devices, **options)
            self.local_devices = sum(device.process_index == jax.process_index() for device in devices)

        def get_data_layout(self, data_shape):
            if len(data_shape) and data_shape[0] is not None and data_shape[0] % self.local_devices:
                return keras.distribution.TensorLayout([None] * len(data_shape), self.device_mesh)
            return super().get_data_layout(data_shape)

    return DataParallelLayout


class DataParallel:
    """Synchronous data parallelism: each step's batch split evenly over devices, one averaged update.

    Every device holds a copy of the weights; a training step gives each device an equal slice of the
    global batch, averages the gradients over all of them and applies the same update everywhere, so
    a step on `n` devices equals a step on one device with the whole batch (up to float rounding;
    batch normalisation on TensorFlow normalises each slice by its own statistics). On TensorFlow this
    is a `tf.distribute.MirroredStrategy`, on JAX a `keras.distribution.DataParallel`. One device
    (the default) is plain Keras, unchanged. In a job of several processes (`distributed`) it takes from
    each process its own slice of the batch: on JAX a `DataParallel` over the devices of all of them, on
    TensorFlow the job's `MultiWorkerMirroredStrategy`, which `fit` (Keras 3.15) cannot train under, so
    `fit` here runs a step of its own there (`_multi_worker_fit`).

    Models and optimisers must be built and checkpoints loaded inside `scope()`; `fit` (below) trains
    in it, splitting each batch over the devices. Prediction and `test_on_batch` work inside the scope
    (validation and callbacks during `fit`) and outside it on any batch size; inside, on JAX, a batch
    that does not split evenly is computed whole on every device (see `_data_parallel_layout`).

    Args:
        devices: How many devices to use (the first ones of `parallel_devices()`), or `"all"`.

    Attributes:
        devices: The names of the devices used (one: `device()`).
        processes: The number of processes the devices belong to (1 but in a multi-process job).

    Raises:
        DeepRestoreError: More devices asked for than there are.
    """

    def __init__(self, devices=1):
        self.devices = check_devices(devices)
        self.processes = distributed.process_count()
        count = len(self.devices)
        self._engine = None
        if count == 1:
            return
        if name() == "tensorflow":
            self._engine = distributed.strategy() or _mirrored_strategy(self.devices)
            if self.processes > 1:
                _keras_steps_local()
        else:
            import jax

            # Each process's batch is its own slice already (`distributed.process_slice`): no sharding again.
            layout = _data_parallel_layout()
            self._engine = layout(devices=jax.devices()[:count], auto_shard_dataset=self.processes == 1)

    @property
    def replicas(self):
        """The number of devices a batch is split over (1: no data parallelism)."""
        return len(self.devices)

    def scope(self):
        """The context to build models and optimisers and load checkpoints in."""
        return self._engine.scope() if self._engine is not None else contextlib.nullcontext()

    def process_batches(self, batches):
        """`step -> batch` as this process feeds it to `fit`: over several processes its own slice of each
        global batch (`distributed.process_slice`), otherwise the whole batch."""
        if self.processes == 1:
            return batches
        return lambda step: distributed.process_slice(batches(step))

    def fit(self, model, batches, callbacks):
        """Trains `model` on every batch of `batches` (a `keras.utils.PyDataset`), calling the Keras
        `callbacks` around each step as `fit` does: `fit` itself, but over the processes of a TensorFlow job.

        Raises:
            distributed.UpdatedPastStep: Another process was lost after this one applied a step's update.
        """
        if name() == "tensorflow" and self.processes > 1:
            _multi_worker_fit(self._engine, model, batches, callbacks)
            return
        with self.scope():  # fit splits each batch over the devices
            model.fit(fit_data(batches), epochs=1, shuffle=False, verbose=0, callbacks=list(callbacks))

    def check_batch(self, batch_size, option="--batch-size"):
        """Raises a `DeepRestoreError` unless `batch_size` splits evenly over the devices."""
        if batch_size % self.replicas:
            raise DeepRestoreError(
                f"{option} {batch_size} does not split evenly over {self.replicas} devices; expected a "
                f"multiple of {self.replicas} (the batch is global: each device takes batch / devices)."
            )


@contextlib.contextmanager
def outside_distribution():
    """Runs the enclosed code without the data-parallel layout of a job of several processes.

    Inside the layout a prediction takes each process's inputs as its slice of one global batch, and its
    outputs span the devices of every process, so no process can read them; outside it every process
    predicts on its own inputs with the (replicated) weights. For callbacks during `fit`, which runs in
    the layout: figures, descriptors scored by mAP. With one process, or on TensorFlow (where every prediction
    is each process's own, see `_keras_steps_local`), it changes nothing.
    """
    if distributed.process_count() == 1 or name() != "jax":
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


@functools.cache
def _keras_steps_local():
    """Makes Keras's predict, evaluate and `test_on_batch` of a model built under the job's
    `MultiWorkerMirroredStrategy` run on this process alone, outside the strategy's scope.

    A TensorFlow model keeps the strategy it was built under and runs every such call under it: a prediction
    became a collective that gathers every process's outputs into one array, twice as long in a job of two,
    and an evaluation failed as `fit` does. A job of several processes computes those on each process
    (validation, figures, descriptors scored by mAP, all on inputs that are the same on every process),
    so the strategy is the one of the current scope, as for a model built outside any; training under the
    strategy is `_multi_worker_fit`'s. Keras has no public switch for it, hence its trainer's property.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    trainer.TensorFlowTrainer.distribute_strategy = property(lambda model: tf.distribute.get_strategy())


def _multi_worker_fit(strategy, model, batches, callbacks):
    """`fit` of one epoch over the PyDataset `batches` under a `MultiWorkerMirroredStrategy`, step by step.

    Keras 3.15's `fit` fails under the strategy before its first step (keras-team/keras#20585): it
    reduces the first batch, a nested `PerReplica`, with `strategy.reduce`, which takes one value, and the
    scalar loss with `axis=0`. Everything else of Keras works there: a compiled `tf.function` runs Keras's
    own `train_step` with `strategy.run` on each device's part of this process's batch (its slice of the
    global one), the model's and the optimiser's variables being mirrored (built in the strategy's scope),
    so the optimiser all-reduces the gradients (each replica's loss is scaled by the number of replicas:
    the update is the whole batch's on one device) and applies the same update on every device of every
    process. The logged values (loss, metrics: each replica's mean over its equal part) are averaged over
    the replicas with `strategy.reduce`, one collective for all of them. The callbacks run between steps,
    outside the strategy's scope, so what they compute is each process's own (`_keras_steps_local`).

    Raises:
        distributed.UpdatedPastStep: The averaging failed after the update was applied (another process
            was lost in between): the weights are one step past the last step the callbacks saw.
    """
    local_replicas = len(strategy.extended.worker_devices)
    first = batches[0]
    with strategy.scope():
        model._symbolic_build(data_batch=first)  # the compiled loss's and metrics' variables, synced on read
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    step, names = _multi_worker_step(strategy, model)

    def per_replica(batch):
        size = len(keras.tree.flatten(batch)[0]) // local_replicas

        def part(context):  # replicas are numbered process by process: this process's are consecutive
            index = context.replica_id_in_sync_group % local_replicas
            return keras.tree.map_structure(lambda value: value[index * size:(index + 1) * size], batch)

        return strategy.experimental_distribute_values_from_function(part)

    callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    applied = int(model.optimizer.iterations.numpy())
    for index in range(len(batches)):
        callbacks.on_train_batch_begin(index)
        try:
            values = step(per_replica(first if index == 0 else batches[index])).numpy()
        except Exception as error:
            if distributed.is_lost_peer(error) and int(model.optimizer.iterations.numpy()) > applied:
                raise distributed.UpdatedPastStep(str(error)) from error
            raise
        applied += 1
        callbacks.on_train_batch_end(index, dict(zip(names, values.tolist())))
        if model.stop_training:
            break
    callbacks.on_train_end()


_multi_worker_steps = weakref.WeakKeyDictionary()


def _multi_worker_step(strategy, model):
    """`(step, names)`: the compiled step of `_multi_worker_fit` for `model`, made once per model (a run that
    trains twice, stopped and resumed, traces it once), and the names of the values it returns, in order."""
    import tensorflow as tf

    if model not in _multi_worker_steps:
        names = []

        def replica_step(data):
            logs = model.train_step(data)
            names[:] = list(logs)  # filled when traced: the order of the values below
            return tf.stack([tf.cast(tf.reshape(logs[name], ()), tf.float32) for name in names])

        @tf.function
        def step(data):
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(replica_step, args=(data,)), axis=None)

        _multi_worker_steps[model] = step, names
    return _multi_worker_steps[model]


def fit_data(batches):
    """What `fit` should read a `keras.utils.PyDataset` of equal batches through.

    On TensorFlow, a `tf.data` pipeline over it that prepares the next batch while a step runs, with
    tf.data's autotuning off. Keras's own pipeline for a PyDataset prefetches with autotuning, which on
    a 2-core CPU now and then settled into about 51 ms per step (`fit` at 19.5 steps/s in whole rounds
    of a stack module whose steps take 25-30 ms, and 9.8 against 21 on the U-Net). On JAX, `fit`
    iterates the PyDataset itself, in the calling thread.

    Args:
        batches: A PyDataset whose items all have the same structure, shapes and dtypes.

    Returns:
        What to pass to `fit` as its data.
    """
    if name() != "tensorflow":
        return batches
    import tensorflow as tf

    first = batches[0]  # also the structure, shapes and dtypes of every other batch

    def generate():
        yield first
        for index in range(1, len(batches)):
            yield batches[index]

    signature = tf.nest.map_structure(lambda value: tf.TensorSpec(np.shape(value), np.asarray(value).dtype), first)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(1).with_options(options)


class EventWriter:
    """TensorBoard event files: scalars and images by step, written with TensorFlow's summary writer.

    The values go in as TensorFlow `Summary` protocol buffers (`simple_value`, PNG images), which
    TensorBoard reads, so the `tensorboard` package itself is not needed to write them. TensorFlow
    ships the writer, so it is imported here also on JAX (it is installed with deeprestore; nothing else
    of it runs there).

    Args:
        directory: Folder of the event files (created if missing).
    """

    def __init__(self, directory):
        import tensorflow as tf

        self._tf = tf
        with tf.device("/cpu:0"):
            self._writer = tf.summary.create_file_writer(str(directory))

    def _write(self, step, values):
        summary = self._tf.compat.v1.Summary(value=values)
        with self._tf.device("/cpu:0"), self._writer.as_default():
            self._tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=int(step))

    def scalars(self, step, values):
        """Writes `{tag: value}` at `step`."""
        Value = self._tf.compat.v1.Summary.Value
        self._write(step, [Value(tag=tag, simple_value=float(value)) for tag, value in values.items()])

    def images(self, step, tag, images):
        """Writes a batch `(count, height, width, channels)` of images in [0, 1] at `step`, as `tag/<i>`."""
        summary = self._tf.compat.v1.Summary
        values = []
        for index, image in enumerate(np.asarray(images, np.float32)):
            pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)  # (height, width, channels)
            encoded = self._tf.io.encode_png(pixels).numpy()
            values.append(summary.Value(tag=f"{tag}/{index}", image=summary.Image(
                height=pixels.shape[0], width=pixels.shape[1], colorspace=pixels.shape[2],
                encoded_image_string=encoded)))
        self._write(step, values)

    def flush(self):
        self._writer.flush()
