"""The one training path for everything that learns weights (stack, denoise, describe): Keras `fit`.

`train(model, batches, schedule, Storage(checkpoints))` runs `model.fit` (through `backend.DataParallel.fit`)
over `StepBatches`, a `keras.utils.PyDataset` whose item `i` is `batches(start + i)`: data come from a function
`batches(step) -> (inputs, targets)` of the step alone, so a resumed run sees exactly the batches an
uninterrupted one would. The whole run is one Keras epoch; the metrics are reset before each step, so
the values Keras logs after it are that step's own (not the epoch's running mean).

What every command shares is a callback (`TrainingCallback`): the loss log (`train.<name>` every step,
`validation.<name>` every `validate_every` steps and at the end), checkpoints and stopping on a signal.
A checkpoint (`step-<NNNNNNNN>.weights.h5`) holds every model variable (weights, batch-norm statistics,
dropout seed state, which Keras's own `save_weights` leaves out) and every optimiser variable, keyed
by variable path; it is written to a temporary file and renamed, then `state.json` points at it, so a
run killed at any moment resumes from its last checkpoint and loses only the steps after it. The last
checkpoint is kept, and every one whose step is a multiple of `keep_every`. SIGTERM and SIGINT (a
cluster pre-empting the job, Ctrl-C) make the run finish the current step, write a checkpoint and
raise `Interrupted`. A recipe adds its own work with `Every(steps, function)` (figures of
reconstructions, mAP), a `ProgressBar` and, for `--tensorboard`, a `TensorBoardCallback`.

With a `backend.DataParallel` over several devices, `fit` runs inside its scope and splits each batch
over them; checkpoints hold plain arrays, so a run resumes on any number of devices. Over several
processes (`distributed`: one per machine, each running the same command) every process feeds its own
slice of each batch and loads the same checkpoint; only the primary writes checkpoints, the loss log and
TensorBoard events; a signal to any process stops all of them after the same step, with a checkpoint;
a process lost mid-run makes the others fail their next step, and the primary then writes a checkpoint
of the last complete one. (On TensorFlow such a job trains with a step of its own instead of `fit`,
calling the same callbacks: `backend._multi_worker_fit`.)
"""

import collections
import contextlib
import dataclasses
import gc
import io
import json
import pathlib
import re
import signal

import h5py
import keras
import numpy as np
from tqdm.auto import tqdm

from deeprestore import backend, distributed, interrupts
from deeprestore.backend import DataParallel
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog
from deeprestore.rundir import atomic_write

STATE_FILE = "state.json"
CHECKPOINT_SUFFIX = ".weights.h5"


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; `--resume` continues it."""


@dataclasses.dataclass
class Schedule:
    """How long to train and how often to checkpoint, validate and log.

    Attributes:
        steps: Total optimisation steps.
        checkpoint_every: Steps between checkpoints (and the granularity of resuming).
        validate_every: Steps between validations (0: only at the end).
        log_every: Steps between loss-log rows.
        keep_every: Checkpoints at multiples of this step are kept besides the last (0: only the last).
    """

    steps: int
    checkpoint_every: int = 100
    validate_every: int = 0
    log_every: int = 1
    keep_every: int = 0


@dataclasses.dataclass(frozen=True)
class Storage:
    """Where a training run keeps what it resumes from and what it measured (the primary process writes them).

    Attributes:
        checkpoints: Folder of the checkpoints (`RunDir.checkpoints_dir`).
        losses: Folder of the loss log (`RunDir.losses_dir`), or None for no log.
        resume: Continue from the last checkpoint in `checkpoints` (without one, start from step 0), and
            drop the loss-log rows written after it.
    """

    checkpoints: pathlib.Path
    losses: pathlib.Path = None
    resume: bool = False


def separate_arrays(batch):
    """`batch` with every array that shares memory with an earlier one in it replaced by a copy.

    A batch may hold one array twice: in stack training the activations one module reads are the
    target of the module below it. tf.data takes a `PyDataset`'s arrays through a Python function
    whose outputs use an array's own memory when it is 64-byte aligned, so such an array becomes two
    tensors over one memory, each with a buffer TensorFlow takes for its only owner. On several devices
    an operation then reused one of them for its output (buffer forwarding) while the other was still
    to be read: a module's input or target was overwritten mid-step, at random (alignment and thread
    timing), and two runs with one seed trained differently. The copies are made only where arrays
    share memory.
    """
    seen = []

    def separate(value):
        if isinstance(value, np.ndarray):
            if any(np.may_share_memory(value, other) for other in seen):
                value = value.copy()
            seen.append(value)
        return value

    return keras.tree.map_structure(separate, batch)


class StepBatches(keras.utils.PyDataset):
    """The batches of steps `start` to `steps - 1`: item `i` is `batches(start + i)`, its arrays
    separated (`separate_arrays`).

    No worker threads or processes: a batch is made when `fit` asks for it (tf.data may prefetch a
    few ahead), so the batches are a function of the step alone, whatever the process did before.
    """

    def __init__(self, batches, start, steps):
        super().__init__()
        self.batches, self.start, self.steps = batches, start, steps

    def __len__(self):
        return self.steps - self.start

    def __getitem__(self, index):
        return separate_arrays(self.batches(self.start + index))


def _keyed(variables, prefix):
    """`{key: variable}` keyed by `<prefix>/<variable path>`; a path that repeats (two modules with
    layers of one name) gets `#<k>` for its k-th repetition, in the model's own variable order."""
    seen = collections.Counter()
    keyed = {}
    for variable in variables:
        key = f"{prefix}/{variable.path}"
        seen[key] += 1
        keyed[key if seen[key] == 1 else f"{key}#{seen[key] - 1}"] = variable
    return keyed


def checkpoint_variables(model):
    """Every variable a checkpoint holds, `{key: variable}`: the model's, then its optimiser's."""
    keyed = _keyed(model.variables, "model")
    if model.optimizer is not None and model.optimizer.built:
        keyed.update(_keyed(model.optimizer.variables, "optimizer"))
    return keyed


def save_checkpoint(model, directory, step, keep_every=0, extra=None):
    """Writes every model and optimiser variable at `step`, atomically, and points `state.json` at it.

    The previous checkpoint is removed only after the new one is complete and recorded, and only when
    its step is not a multiple of `keep_every`.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}{CHECKPOINT_SUFFIX}"
    # HDF5 builds the file in memory and Python writes it: on a full disk HDF5 fails mid-write and can
    # crash the process when the file is closed, whereas this write fails cleanly (ENOSPC, EFBIG).
    image = io.BytesIO()
    with h5py.File(image, "w") as file:
        file.attrs["step"] = step
        for index, (key, variable) in enumerate(checkpoint_variables(model).items()):
            file.create_dataset(key, data=np.asarray(variable.numpy())).attrs["index"] = index
    atomic_write(directory / name, image.getbuffer())
    previous = read_state(directory)
    atomic_write(directory / STATE_FILE, json.dumps({"step": step, "file": name, **(extra or {})}, indent=2))
    if previous and previous["file"] != name and not (keep_every and previous["step"] % keep_every == 0):
        (directory / previous["file"]).unlink(missing_ok=True)


def read_state(directory):
    """Returns the last checkpoint's state (`step`, `file`, ...) or None when there is none.

    Raises:
        DeepRestoreError: `state.json` is not a checkpoint state.
    """
    path = pathlib.Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state.get("step"), int) or not isinstance(state.get("file"), str):
            raise ValueError("no integer step and file name")
    except (ValueError, AttributeError, UnicodeDecodeError) as error:
        raise DeepRestoreError(f"Checkpoint state '{path}' is unreadable ({error}); expected JSON with the step and "
                               "file of the last checkpoint, as training writes it.") from None
    return state


def check_checkpoint(directory):
    """The last checkpoint's state after checking that its file opens and holds arrays; None without one.

    Raises:
        DeepRestoreError: The state or the checkpoint file is damaged (truncated, not HDF5, empty).
    """
    state = read_state(directory)
    if state is None:
        return None
    path = pathlib.Path(directory) / state["file"]
    try:
        with h5py.File(path, "r") as file:
            if "model" not in file:
                raise ValueError("no model variables")
    except (OSError, ValueError) as error:
        raise DeepRestoreError(f"Checkpoint '{path}' cannot be read ({' '.join(str(error).split())[:120]}); "
                               "expected the HDF5 file training wrote.") from None
    return state


def load_checkpoint(model, directory):
    """Restores the last checkpoint in `directory` into a compiled model; returns its state.

    Every variable is checked before any is assigned, so a checkpoint that does not fit leaves the
    model as it was.

    Raises:
        DeepRestoreError: There is no checkpoint, it cannot be read, or it does not fit the model.
    """
    state = check_checkpoint(directory)
    if state is None:
        raise DeepRestoreError(f"No checkpoint in '{directory}'; expected {STATE_FILE} written by a training run.")
    path = pathlib.Path(directory) / state["file"]
    with h5py.File(path, "r") as file:
        stored = {}
        file.visititems(lambda key, item: stored.update({key: item}) if isinstance(item, h5py.Dataset) else None)
        if any(key.startswith("optimizer/") for key in stored) and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        wanted = _match(checkpoint_variables(model), stored, path)
        for key, variable in wanted.items():
            if tuple(stored[key].shape) != tuple(variable.shape):
                raise DeepRestoreError(f"Checkpoint '{path}' does not fit variable '{key}': it has shape "
                                       f"{stored[key].shape}, expected {tuple(variable.shape)}.")
        for key, variable in wanted.items():
            variable.assign(stored[key][()])
    return state


def _match(wanted, stored, path):
    """`{stored key: variable}`: by path, or where Keras numbered the layers differently (the same model
    built twice in one process: `dense_1` for `dense`), in order, by variable name and shape (the
    optimiser's variables, whose names hold the layers', by shape).

    Raises:
        DeepRestoreError: The checkpoint holds other variables than the model.
    """
    if set(wanted) == set(stored):
        return wanted

    def signature(keys, shapes):  # optimiser variables carry the layer's name in their own: shapes only
        return [(key.split("/")[0], key.rsplit("/", 1)[-1].split("#")[0] if key.startswith("model/") else "",
                 tuple(shape)) for key, shape in zip(keys, shapes)]

    ordered = sorted(stored, key=lambda key: stored[key].attrs.get("index", 0))
    shapes = [variable.shape for variable in wanted.values()]
    if signature(ordered, [stored[key].shape for key in ordered]) == signature(wanted, shapes):
        return dict(zip(ordered, wanted.values()))
    missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
    raise DeepRestoreError(
        f"Checkpoint '{path}' does not fit the model: {len(missing)} of its {len(wanted)} variables are not in it "
        f"({', '.join(missing[:3]) or 'none'}) and it holds {len(extra)} others ({', '.join(extra[:3]) or 'none'}); "
        "expected a checkpoint of this run's model.")


@contextlib.contextmanager
def stop_on_signals(flag):
    """Sets `flag["stop"]` on SIGTERM or SIGINT instead of dying mid-step (the one mechanism of `interrupts`)."""
    with interrupts.deferred((signal.SIGTERM, signal.SIGINT), second_raises=False, raise_on_exit=False,
                             on_signal=lambda name: flag.setdefault("stop", name)):
        yield


def truncate_log(directory, step):
    """Drops loss-log rows after `step` (rows a killed run wrote past its last checkpoint)."""
    for path in pathlib.Path(directory).glob("*.csv"):
        lines = path.read_text().splitlines()
        if not lines:
            continue
        kept = [lines[0]] + [line for line in lines[1:] if _row_step(line) is not None and _row_step(line) <= step]
        atomic_write(path, "\n".join(kept) + "\n")


def _row_step(line):
    try:
        return int(float(line.split(",")[0]))
    except ValueError:  # half a row from a kill mid-write
        return None


def evaluate(model, validation):
    """The mean of each logged value over the validation batches (one compiled test step each)."""
    totals = {}
    count = 0
    for inputs, targets in validation():
        for name, value in model.test_on_batch(inputs, targets, return_dict=True).items():
            totals[name] = totals.get(name, 0.0) + float(value)
        count += 1
    return {name: total / max(count, 1) for name, total in totals.items()}


class TrainingCallback(keras.callbacks.Callback):
    """What every training run does after each step: log, check, checkpoint, validate, stop on a signal.

    Args:
        schedule: The `Schedule`.
        checkpoints: Folder of the checkpoints.
        log: A `LossLog`, or None.
        validation: `() -> iterable of (inputs, targets)`, or None.
        flag: The dict `stop_on_signals` sets `stop` in.
        tensorboard: A `TensorBoardCallback` that gets every logged value too, or None.
        start: The step training starts from (the checkpoint's, when resuming).
    """

    def __init__(self, schedule, checkpoints, log, validation, flag, tensorboard=None, start=0):
        super().__init__()
        self.start = start
        self.schedule, self.checkpoints, self.log = schedule, checkpoints, log
        self.validation, self.flag, self.tensorboard = validation, flag, tensorboard
        self.step = 0
        self.saved = start  # the step of the last checkpoint
        self.results = {}

    def on_train_batch_begin(self, batch, logs=None):
        self.model.reset_metrics()  # each step logs its own values

    def on_train_batch_end(self, batch, logs=None):
        self.step = step = self.start + batch + 1
        values = {f"train.{name}": float(value) for name, value in (logs or {}).items()}
        if not all(np.isfinite(value) for value in values.values()):
            raise DeepRestoreError(f"The training loss became non-finite at step {step} ({values}); expected finite "
                                   "values: lower the learning rate or check the data.")
        if step % self.schedule.log_every == 0:
            self._record(step, values)
        if distributed.process_count() > 1 and distributed.any_process(self.flag) and not self.flag:
            self.flag["stop"] = "a signal to another process of the job"  # all stop after the same step
        if step % self.schedule.checkpoint_every == 0 or step == self.schedule.steps or self.flag:
            self.checkpoint(step)
        if self.flag:
            self.model.stop_training = True
            return
        due = self.schedule.validate_every and step % self.schedule.validate_every == 0
        if self.validation is not None and (due or step == self.schedule.steps):
            self.results = evaluate(self.model, self.validation)
            self._record(step, {f"validation.{name}": value for name, value in self.results.items()})

    def checkpoint(self, step):
        """Writes the checkpoint of `step` (the primary process only; every process holds the same values)."""
        if distributed.is_primary():
            save_checkpoint(self.model, self.checkpoints, step, self.schedule.keep_every)
        self.saved = step

    def _record(self, step, values):
        if self.log is not None:
            self.log.log(step, values)
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, values)


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar of the run's steps showing each step's loss; `train` shows one where it is among its callbacks.

    Args:
        description: The bar's label.
        show: Whether to show it (a command passes its `show_progress` through).
    """

    def __init__(self, description="train", show=True):
        super().__init__()
        self.description, self.show = description, show
        self.bar = None

    def open(self, step, steps):
        """Shows the bar at `step` of `steps` (`train` opens it before the first step, at the checkpoint's)."""
        self.bar = tqdm(total=steps, initial=step, desc=self.description, disable=not self.show, leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{float((logs or {}).get('loss', float('nan'))):.4g}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Every(keras.callbacks.Callback):
    """Calls `function(step)` every `steps` steps and at the last one (`total`), unless training stops early.

    Args:
        steps: The interval (0: only at the last step).
        function: `step -> None`, e.g. drawing a figure of reconstructions.
        total: The last step.
    """

    def __init__(self, steps, function, total):
        super().__init__()
        self.steps, self.function, self.total = steps, function, total
        self.start = 0

    def on_train_batch_end(self, batch, logs=None):
        step = self.start + batch + 1
        due = (self.steps and step % self.steps == 0) or step == self.total
        if due and not self.model.stop_training:  # `model` copies JAX's training state into the variables first
            with backend.outside_distribution():  # over several processes each predicts on its own inputs
                self.function(step)


class TensorBoardCallback(Every):
    """Writes TensorBoard event files into `directory`: every value the loss log gets (`train/loss`,
    `validation/loss`, ...) and, every `steps` steps and at the last, the images `images()` returns,
    `{tag: (count, height, width, channels)}` in [0, 1]. Uses TensorFlow's summary writer (see
    `backend.EventWriter`); pass it to `train` among the callbacks. In a job of several processes only the
    primary writes; the others compute the images with it (a prediction is a collective step)."""

    def __init__(self, directory, steps, total, images=None):
        super().__init__(steps, self._write_images, total)
        self.writer = backend.EventWriter(directory) if distributed.is_primary() else None
        self.images = images

    def scalars(self, step, values):
        """Writes `{term: value}` at `step`, a term's first dot becoming TensorBoard's group separator."""
        if self.writer is not None:
            self.writer.scalars(step, {name.replace(".", "/", 1): value for name, value in values.items()})

    def _write_images(self, step):
        if self.images is not None:
            for tag, images in self.images().items():
                if self.writer is not None:
                    self.writer.images(step, tag, np.clip(np.asarray(images, np.float32), 0.0, 1.0))

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()


def train(model, batches, schedule, storage, validation=None, parallel=None, callbacks=()):
    """Trains a compiled Keras model with `fit`, checkpoints, resuming and signal handling.

    Args:
        model: A compiled Keras model.
        batches: `step -> (inputs, targets)`, deterministic in the step, every batch the same size.
        schedule: A `Schedule`.
        storage: A `Storage`: the checkpoints' and the loss log's folders, and whether to resume.
        validation: `() -> iterable of (inputs, targets)` evaluated every `schedule.validate_every`
            steps and at the end, or None.
        parallel: The `DataParallel` the model was built in, or None for one device.
        callbacks: More Keras callbacks, run after each step's checkpoint and validation: `Every`, a
            `ProgressBar` (without one, no bar) and a `TensorBoardCallback`, which also gets every logged value.

    Returns:
        The last validation results `{name: value}` (empty without validation).

    Raises:
        Interrupted: A signal stopped training; a checkpoint was written.
        DeepRestoreError: The loss became NaN or infinite, the checkpoint does not fit, or another process
            of the job was lost (a checkpoint of the last complete step was written).
    """
    parallel = parallel or DataParallel()
    step = 0
    if storage.resume and read_state(storage.checkpoints) is not None:
        with parallel.scope():  # optimiser variables a checkpoint creates must be replicated too
            step = load_checkpoint(model, storage.checkpoints)["step"]
    primary = distributed.is_primary()
    if storage.resume and storage.losses is not None and primary:
        truncate_log(storage.losses, step)
    log = LossLog(storage.losses) if storage.losses is not None and primary else None
    flag = {}
    tensorboard = next((callback for callback in callbacks if isinstance(callback, TensorBoardCallback)), None)
    main = TrainingCallback(schedule, storage.checkpoints, log, validation, flag, tensorboard, start=step)
    bars = [callback for callback in callbacks if isinstance(callback, ProgressBar)]
    extra = bars + [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    for callback in extra:
        if isinstance(callback, Every):
            callback.start = step
    for bar in bars:
        bar.open(step, schedule.steps)
    try:
        if step < schedule.steps:
            with stop_on_signals(flag):
                parallel.fit(model, StepBatches(parallel.process_batches(batches), step, schedule.steps),
                             [main, *extra])
    except Exception as error:
        if not distributed.is_lost_peer(error):
            raise
        if main.step > main.saved and not isinstance(error, distributed.UpdatedPastStep):
            main.checkpoint(main.step)
        # TensorFlow's message may start with the failed function's name in braces, or with where the graph
        # defined the failed operation (indented lines): the cause follows them
        lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith(
            (" ", "Graph execution error", "Detected at node"))]
        reason = " ".join(re.sub(r"\{\{.*?\}\}", "", " ".join(lines)).split())[:160]
        kept = f"the checkpoint of step {main.saved} is kept" if primary else "process 0 keeps its last checkpoint"
        raise DeepRestoreError(
            f"Training across {distributed.process_count()} processes stopped at step {main.step + 1}: another "
            f"process of the job was lost ({reason}); {kept}. Expected all processes to the end: resume the job to "
            "continue.") from None
    finally:
        for bar in bars:
            bar.close()
        if log is not None:
            log.close()
    if flag.get("stop"):
        # fit stopped with tf.data still prefetching from the PyDataset in its own thread; freeing that
        # pipeline now, while the interpreter is whole, keeps the process from hanging at exit.
        gc.collect()
        raise Interrupted(f"Training stopped by {flag['stop']} at step {main.step}; checkpoint written.")
    return main.results
