"""The one training path for everything that learns weights (stack, denoise, describe).

`train(model, batches, schedule, checkpoints=...)` runs the model's compiled Keras train step. Data
come from a function `batches(step) -> (inputs, targets)` that depends only on the step number, so a
resumed run sees exactly the batches an uninterrupted one would. A checkpoint holds every model
variable (weights, batch-norm statistics, dropout seed state) and every optimiser variable, and is
written atomically: a run killed at any moment resumes from its last checkpoint and loses only the
steps after it. SIGTERM and SIGINT (a cluster pre-empting the job, Ctrl-C) make the loop finish the
current step, write a checkpoint and raise `Interrupted`. With a `backend.DataParallel` over several
devices each step splits its batch over them; checkpoints hold plain arrays, so a run resumes on any
number of devices.

Every logged value (`loss`, per-output losses, metrics) becomes a loss-log column under
`train.<name>`, and validation every N steps under `validation.<name>`.
"""

import contextlib
import dataclasses
import json
import pathlib
import signal

import numpy as np
from tqdm.auto import tqdm

from deeprestore import interrupts
from deeprestore.backend import DataParallel
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog
from deeprestore.rundir import atomic_write

STATE_FILE = "state.json"


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
    """

    steps: int
    checkpoint_every: int = 100
    validate_every: int = 0
    log_every: int = 1


def save_checkpoint(model, directory, step, extra=None):
    """Writes every model and optimiser variable at `step`, atomically, and points `state.json` at it.

    The previous checkpoint is removed only after the new one is complete and recorded.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}.npz"
    arrays = {f"model/{index}": np.asarray(variable.value) for index, variable in enumerate(model.variables)}
    if model.optimizer is not None and model.optimizer.built:
        arrays.update({f"optimizer/{index}": np.asarray(variable.value)
                       for index, variable in enumerate(model.optimizer.variables)})
    temporary = directory / f".{name}.partial"
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)
    temporary.replace(directory / name)
    previous = read_state(directory)
    atomic_write(directory / STATE_FILE, json.dumps({"step": step, "file": name, **(extra or {})}, indent=2))
    if previous and previous["file"] != name:
        (directory / previous["file"]).unlink(missing_ok=True)


def read_state(directory):
    """Returns the last checkpoint's state (`step`, `file`, ...) or None when there is none."""
    path = pathlib.Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def load_checkpoint(model, directory):
    """Restores the last checkpoint in `directory` into a compiled model; returns its state.

    Raises:
        DeepRestoreError: There is no checkpoint, or it does not fit the model.
    """
    state = read_state(directory)
    if state is None:
        raise DeepRestoreError(f"No checkpoint in '{directory}'; expected {STATE_FILE} written by a training run.")
    with np.load(pathlib.Path(directory) / state["file"]) as arrays:
        _restore(model.variables, arrays, "model", directory)
        optimizer_keys = [key for key in arrays.files if key.startswith("optimizer/")]
        if optimizer_keys:
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            _restore(model.optimizer.variables, arrays, "optimizer", directory)
    return state


def _restore(variables, arrays, prefix, directory):
    keys = sorted((key for key in arrays.files if key.startswith(prefix + "/")), key=lambda key: int(key.split("/")[1]))
    if len(keys) != len(variables):
        raise DeepRestoreError(
            f"Checkpoint in '{directory}' holds {len(keys)} {prefix} variables; the {prefix} has {len(variables)}."
        )
    for key, variable in zip(keys, variables):
        value = arrays[key]
        if tuple(value.shape) != tuple(variable.shape):
            raise DeepRestoreError(
                f"Checkpoint in '{directory}' does not fit {prefix} variable '{variable.path}': "
                f"it has shape {value.shape}, expected {tuple(variable.shape)}."
            )
        variable.assign(value)


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
        kept = [lines[0]] + [line for line in lines[1:] if line and int(float(line.split(",")[0])) <= step]
        atomic_write(path, "\n".join(kept) + "\n")


def train(model, batches, schedule, *, checkpoints, log_directory=None, validation=None, resume=False,
          show_progress=True, description="train", parallel=None):
    """Trains a compiled Keras model with checkpoints, resuming and signal handling.

    Each step is one call of the model's compiled train step (`train_on_batch`): no data threads run
    behind the loop, so a signal is handled between two steps and the process exits promptly.

    Args:
        model: A compiled Keras model.
        batches: `step -> (inputs, targets)`, deterministic in the step.
        schedule: A `Schedule`.
        checkpoints: Folder of the checkpoints (`RunDir.checkpoints_dir`).
        log_directory: Folder of the loss log (`RunDir.losses_dir`), or None for no log.
        validation: `() -> iterable of (inputs, targets)` evaluated every `schedule.validate_every`
            steps and at the end, or None.
        resume: Continue from the last checkpoint in `checkpoints`.
        show_progress: Whether to show a progress bar.
        description: The bar's label.
        parallel: The `DataParallel` the model was built in, or None for one device.

    Returns:
        The last validation results `{name: value}` (empty without validation).

    Raises:
        Interrupted: A signal stopped training; a checkpoint was written.
        DeepRestoreError: The loss became NaN or infinite.
    """
    parallel = parallel or DataParallel()
    step = 0
    if resume:
        with parallel.scope():  # optimiser variables a checkpoint creates must be replicated too
            step = load_checkpoint(model, checkpoints)["step"]
    log = LossLog(log_directory) if log_directory is not None else None
    if resume and log_directory is not None:
        truncate_log(log_directory, step)
    flag = {}
    results = {}
    bar = tqdm(total=schedule.steps, initial=step, desc=description, disable=not show_progress, leave=False)
    try:
        with stop_on_signals(flag):
            while step < schedule.steps and not flag:
                inputs, targets = batches(step)
                values = {f"train.{name}": float(value)
                          for name, value in parallel.train_on_batch(model, inputs, targets).items()}
                step += 1
                if not all(np.isfinite(value) for value in values.values()):
                    raise DeepRestoreError(
                        f"The training loss became non-finite at step {step} ({values}); expected finite "
                        "values: lower the learning rate or check the data."
                    )
                if log is not None and step % schedule.log_every == 0:
                    log.log(step, values)
                bar.update(1)
                bar.set_postfix(loss=f"{values.get('train.loss', float('nan')):.4g}", refresh=False)
                if step % schedule.checkpoint_every == 0 or step == schedule.steps or flag:
                    save_checkpoint(model, checkpoints, step)
                due = schedule.validate_every and step % schedule.validate_every == 0
                if validation is not None and (due or step == schedule.steps) and not flag:
                    results = evaluate(model, validation)
                    if log is not None:
                        log.log(step, {f"validation.{name}": value for name, value in results.items()})
    finally:
        bar.close()
        if log is not None:
            log.close()
    if flag.get("stop"):
        raise Interrupted(f"Training stopped by {flag['stop']} at step {step}; checkpoint written.")
    return results


def evaluate(model, validation):
    """The mean of each logged value over the validation batches (one compiled test step each)."""
    totals = {}
    count = 0
    for inputs, targets in validation():
        for name, value in model.test_on_batch(inputs, targets, return_dict=True).items():
            totals[name] = totals.get(name, 0.0) + float(value)
        count += 1
    return {name: total / max(count, 1) for name, total in totals.items()}
