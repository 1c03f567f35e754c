"""Resuming a training run (stack, denoise train, describe train): the checks and the snapshot kept until
its first new checkpoint; `deeprestore.driver` runs them.

`--resume RUN` continues a run from its last checkpoint (from step 0 when it was killed before its
first one) with its stored settings. An option given on the command line that would change the model
or the data is refused, naming the option, its stored and its given value; the options in `RESUMABLE`
(how long to train, on how many devices, how often to checkpoint and validate) may change, and the
new values go into `config.json` and the command line into `argv.txt`. Every check runs before the
run is touched, and a resume that fails before its first new checkpoint puts `config.json`,
`argv.txt` and `status` back as they were, so a typo never damages finished work.

The run is claimed first (see `RunDir.claim`): a run whose owner is alive is refused, and of two
resumes started together exactly one proceeds; the other is refused before it reads the checkpoint.

`--name NAME` makes the run `<runs>/<command>/NAME/`: the first time it is created; when it exists with
the same options (only those in `RESUMABLE` may differ) it is resumed as by `--resume`, so a cluster job
requeued or resubmitted with the same command line continues its run; a run already complete is left
as it is; other options are refused in one line, naming the first difference.
"""

import contextlib
import dataclasses
import json
import shlex
import sys

from deeprestore.errors import DeepRestoreError
from deeprestore.options import given_options

# Options a resumed run may change: none changes the model or the data a step sees.
RESUMABLE = ("steps", "devices", "checkpoint_every", "validate_every", "keep_every", "tensorboard")
# What marking a run running changes; a resume refused before its first checkpoint puts them back.
_SNAPSHOT_FILES = ("config.json", "argv.txt", "status", "owner.json")


def _comparable(value):
    return json.loads(json.dumps(value, default=str))


def flag(name):
    return "--" + name.replace("_", "-")


def _spelling(context, name):
    """How the command line spells the option stored as `name` (`--from` for `source`)."""
    return next((param.opts[0] for param in context.command.params if param.name == name), flag(name))


def reopen(context, path, command, settings_class, options, stored_key="settings"):
    """Claims the run at `path`, checks a resume of it and returns `(run, settings, seed, step)`.

    Nothing in the run changes but its owner (put back when a check fails).

    Args:
        context: The click context (to tell given options from defaults).
        path: The run directory.
        command: The command the run must have been made by, e.g. `denoise-train`.
        settings_class: The command's settings dataclass.
        options: The command's options as parsed.
        stored_key: The config entry holding the settings to compare with (`resolved` where the
            command stores its settings with model defaults filled in).

    Raises:
        DeepRestoreError: A live owner, not a run of `command`, a damaged checkpoint, a changed model or data option,
            fewer steps than trained already, or a bad `--devices` value.
    """
    from deeprestore.rundir import OWNER_FILE, RunDir, atomic_write

    run = RunDir.open(path)
    run.claim()
    try:
        return check_resume(context, run, command, settings_class, options, stored_key)
    except BaseException:
        if run.previous_owner is None:
            (run.task_path / OWNER_FILE).unlink(missing_ok=True)
        else:
            atomic_write(run.task_path / OWNER_FILE, run.previous_owner)
        run.release()
        raise


def check_resume(context, run, command, settings_class, options, stored_key):
    """`reopen`'s checks of the claimed `run`."""
    from deeprestore import backend, training
    from deeprestore.backend import DataParallel

    path = run.path
    backend.check_supported()
    config = run.config
    if config.get("command") != command:
        raise DeepRestoreError(f"'{path}' is a '{config.get('command')}' run; expected a {command} run to resume.")
    if not isinstance(config.get("settings"), dict) or not isinstance(config.get("seed"), int):
        raise DeepRestoreError(f"'{path}' has no stored settings and seed in its config.json; expected a run made by "
                               f"{command}.")
    known = {field.name for field in dataclasses.fields(settings_class)}
    stored = dict(config["settings"])
    compared = {**stored, **(config.get(stored_key) or {})}
    if not set(stored) <= known:
        unknown = sorted(set(stored) - known)
        raise DeepRestoreError(f"'{path}' stores settings this version does not know ({', '.join(unknown)}); expected "
                               f"a {command} run made by this version.")
    state = training.check_checkpoint(run.path / "checkpoints")
    for name, value in given_options(context, options).items():
        if name not in RESUMABLE and name in known and _comparable(value) != _comparable(compared.get(name)):
            raise DeepRestoreError(
                f"{_spelling(context, name)} {value} differs from the run's stored {compared.get(name)}; --resume "
                f"continues '{path}' with its own model and data (only {', '.join(map(flag, RESUMABLE))} may change).")
    changed = {name: value for name, value in given_options(context, options).items() if name in RESUMABLE}
    trained = state["step"] if state else 0
    if "steps" in changed and changed["steps"] < trained:
        raise DeepRestoreError(f"--steps {changed['steps']} is fewer than the {trained} steps '{path}' has trained; "
                               f"expected at least {trained}.")
    settings = settings_class(**{name: value for name, value in {**compared, **changed}.items() if name in known})
    DataParallel(settings.devices)  # a bad --devices value fails here, before the run is touched
    return run, settings, config["seed"], trained


@contextlib.contextmanager
def resumed(run, settings):
    """Marks `run` running with its new settings and command line, and puts them back on a failure
    before the first new checkpoint (so a refused resume leaves the run as it was)."""
    from deeprestore import training
    from deeprestore.rundir import atomic_write

    snapshot = {name: (run.task_path / name).read_bytes() for name in _SNAPSHOT_FILES
                if (run.task_path / name).is_file()}
    snapshot.pop("owner.json", None)  # the owner before `reopen` claimed the run
    if run.previous_owner is not None:
        snapshot["owner.json"] = run.previous_owner
    before = training.read_state(run.path / "checkpoints")
    run.update_config(settings=dataclasses.asdict(settings), resumes=run.config.get("resumes", 0) + 1)
    atomic_write(run.task_path / "argv.txt", snapshot.get("argv.txt", b"").decode() + shlex.join(sys.argv) + "\n")
    run.mark("running")
    run.record_job()
    try:
        with run:
            yield run
    except BaseException:
        if _last_state(run) == before:
            for name in _SNAPSHOT_FILES:
                if name in snapshot:
                    atomic_write(run.task_path / name, snapshot[name])
                else:
                    (run.task_path / name).unlink(missing_ok=True)
        raise


def _last_state(run):
    from deeprestore import training

    try:
        return training.read_state(run.path / "checkpoints")
    except DeepRestoreError:
        return None


def check_same_run(run, command, settings, seed):
    """Raises a one-line `DeepRestoreError` unless `run` is a `command` run of `settings` and `seed` (the
    options in `RESUMABLE` aside)."""
    config = run.config
    if config.get("command") != command or not isinstance(config.get("settings"), dict):
        raise DeepRestoreError(f"'{run.path}' is not a {command} run (it is '{config.get('command')}'); expected "
                               "another --name.")
    stored = {"seed": config.get("seed"), **config["settings"]}
    given = {"seed": seed, **dataclasses.asdict(settings)}
    for key in sorted(set(stored) | set(given)):
        if key not in RESUMABLE and _comparable(stored.get(key)) != _comparable(given.get(key)):
            raise DeepRestoreError(
                f"Run '{run.path}' was started with {flag(key)} {stored.get(key)}; this command has {given.get(key)}. "
                f"Expected the run's own options (only {', '.join(map(flag, RESUMABLE))} may differ), or another "
                "--name.")
