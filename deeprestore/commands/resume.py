"""What the training commands (stack, denoise train, describe train) share: resuming, and named runs.

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

One training over several processes (one per machine, see `distributed`) runs the same command line in
each, with `--name` or `--resume` so that all find one run directory. Process 0 lives the run's life
as above; the others wait until it has created or claimed the run, take the settings and seed it
stores, and train beside it (`_follow`), writing nothing into the run.
"""

import contextlib
import dataclasses
import json
import pathlib
import shlex
import sys

import click
from click.core import ParameterSource

from deeprestore.errors import DeepRestoreError

# Options a resumed run may change: none changes the model or the data a step sees.
RESUMABLE = ("steps", "devices", "checkpoint_every", "validate_every", "keep_every", "tensorboard")
# What marking a run running changes; a resume refused before its first checkpoint puts them back.
_SNAPSHOT_FILES = ("config.json", "argv.txt", "status", "owner.json")


def resume_option(function):
    """`--resume RUN` of a training command."""
    return click.option(
        "--resume", default=None, type=click.Path(exists=True, file_okay=False), metavar="RUN",
        help="Continue this run from its last checkpoint with its own settings; only "
             f"{', '.join(map(_flag, RESUMABLE[:-1]))} and {_flag(RESUMABLE[-1])} may change.")(function)


def given_options(context, options):
    """The options typed on the command line (or set by environment), `{name: value}`."""
    return {name: value for name, value in options.items()
            if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}


def _comparable(value):
    return json.loads(json.dumps(value, default=str))


def _flag(name):
    return "--" + name.replace("_", "-")


def _spelling(context, name):
    """How the command line spells the option stored as `name` (`--from` for `source`)."""
    return next((param.opts[0] for param in context.command.params if param.name == name), _flag(name))


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
        return _checked(context, run, command, settings_class, options, stored_key)
    except BaseException:
        if run.previous_owner is None:
            (run.task_path / OWNER_FILE).unlink(missing_ok=True)
        else:
            atomic_write(run.task_path / OWNER_FILE, run.previous_owner)
        run.release()
        raise


def _checked(context, run, command, settings_class, options, stored_key):
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
                f"continues '{path}' with its own model and data (only {', '.join(map(_flag, RESUMABLE))} may change).")
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


def resume_run(context, path, command, settings_class, options, recipe, stored_key="settings"):
    """Resumes the run at `path`: `recipe(settings, run, seed)` inside it, then prints the run directory.

    Args:
        context: The click context.
        path: The run directory to resume.
        command: The command that made it.
        settings_class: Its settings dataclass.
        options: The parsed options.
        recipe: `(settings, run, seed) -> result`, run with `resume=True`.
        stored_key: See `reopen`.
    """
    from deeprestore.commands.common import interrupted_says, sigterm_interrupts

    run, settings, seed, _ = reopen(context, path, command, settings_class, options, stored_key)
    with interrupted_says(run, resume_hint(command)), resumed(run, settings), sigterm_interrupts():
        recipe(settings, run, seed)
    click.echo(str(run.path))
    return run


def resume_hint(command, name=None):
    """`run -> sentence`: the exact command that continues an interrupted training run (see
    `common.interrupted_says`)."""

    def hint(run):
        from deeprestore import backend

        words = (f"deeprestore --backend {backend.name()} {command.replace('-', ' ')} "
                 f"--resume {shlex.quote(str(run.path))}")
        again = f", or run the same command again (--name {name})" if name is not None else ""
        return f"Continue it from its last checkpoint with: {words}{again}."

    return hint


def name_option(function):
    """`--name NAME` of a training command."""
    return click.option(
        "--name", default=None, metavar="NAME",
        help="Run directory <runs>/<command>/NAME: created if new; if it exists with these options (only "
             f"{', '.join(map(_flag, RESUMABLE))} may differ) resumed from its last checkpoint, so a requeued or "
             "resubmitted job continues its run; refused if other options differ.")(function)


def train_command(context, command, settings_class, options, train, *, resume=None, name=None,
                  stored_key="settings", check=None):
    """The life of a training command's run: a new one, `--resume RUN`, or `--name NAME` (created, or
    resumed when it exists with the same options).

    Args:
        context: The click context; its object is the global `State`.
        command: The command's run folder, e.g. `denoise-train`.
        settings_class: Its settings dataclass.
        options: The parsed options.
        train: `(settings, run, seed, resume) -> result`, the recipe.
        resume: `--resume RUN`, or None.
        name: `--name NAME`, or None.
        stored_key: See `reopen`.
        check: `settings -> None`, run before a new run is created, to fail on a bad option before any work.

    Raises:
        DeepRestoreError: Both `--resume` and `--name`, a bad name, a named run of other options, a refused
            `--devices`, or what `check` or `reopen` raise.
    """
    from deeprestore import backend, distributed
    from deeprestore.commands.common import run_recipe
    from deeprestore.rundir import RunDir, check_folder_name

    state = context.obj
    if resume is not None and name is not None:
        raise DeepRestoreError(f"Got --resume {resume} and --name {name}; expected one (--name resumes its run when it "
                               "exists).")
    cluster = distributed.cluster_from_environment()  # a bad description fails here, before any work
    if cluster is not None:
        if resume is None and name is None:
            raise DeepRestoreError(f"A training over {cluster.processes} processes got neither --name nor --resume; "
                                   "expected --name NAME (e.g. --name $SLURM_JOB_ID), so that every process finds the "
                                   "one run directory.")
        if name is not None:
            check_folder_name(name, "--name", "my-run")
        distributed.initialize()  # before the backend computes anything
        if not distributed.is_primary():
            return _follow(context, pathlib.Path(resume or pathlib.Path(state.runs) / command / name), command,
                           settings_class, options, train, stored_key)
        train = _leading(train)
    if name is not None:
        check_folder_name(name, "--name", "my-run")
        path = pathlib.Path(state.runs) / command / name
        if path.exists():
            run = RunDir.open(path)
            settings = settings_class(**options)
            _check_same_run(run, command, settings, state.seed)
            stored_steps = run.config["settings"].get("steps")
            if run.status == "complete" and settings.steps == stored_steps:
                distributed.barrier("run")  # the other processes find it complete too
                click.echo(f"Run {path} is already complete ({stored_steps} steps); nothing to do.", err=True)
                click.echo(str(run.path))
                return run
            return resume_run(context, path, command, settings_class, options,
                              lambda settings, run, seed: train(settings, run, seed, True), stored_key)
    if resume is not None:
        return resume_run(context, resume, command, settings_class, options,
                          lambda settings, run, seed: train(settings, run, seed, True), stored_key)
    settings = settings_class(**options)
    if check is not None:
        check(settings)
    backend.check_devices(settings.devices)  # a refused --devices leaves no run directory
    return run_recipe(state, command, settings, lambda run: train(settings, run, state.seed, False), name=name,
                      join=False, continue_hint=resume_hint(command, name))


def _leading(train):
    """Process 0's recipe: once its run is created or claimed (and has its checkpoint folder), lets the
    other processes go on (`_follow`), then trains."""

    def lead(settings, run, seed, resume):
        from deeprestore import distributed

        run.checkpoints_dir  # noqa: B018 (created here, read by the other processes)
        distributed.barrier("run")
        return train(settings, run, seed, resume)

    return lead


def _follow(context, path, command, settings_class, options, train, stored_key):
    """A process other than 0 of a multi-process training: waits until process 0 has created or claimed
    the run at `path`, takes its stored settings and seed (the options it may change as given), and runs
    the recipe in step with process 0 in a private scratch run that is deleted at the end, its
    `checkpoints/` the shared run's (read on resume; only process 0 writes there). Prints the shared run.

    Raises:
        DeepRestoreError: Process 0 stopped before training (its log says why), or what `_checked` raises.
    """
    import shutil
    import tempfile

    from deeprestore import distributed
    from deeprestore.rundir import RunDir

    try:
        distributed.barrier("run")
    except Exception as error:
        if not distributed.is_lost_peer(error):
            raise
        raise DeepRestoreError(f"Process 0 of the job stopped before training ({' '.join(str(error).split())[:120]}); "
                               "expected it to create or resume the run: see its log.") from None
    run = RunDir.open(path)
    if run.status == "complete" and settings_class(**options).steps == run.config["settings"].get("steps"):
        click.echo(str(run.path))
        return run
    _, settings, seed, _ = _checked(context, run, command, settings_class, options, stored_key)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"deeprestore-process{distributed.process_index()}-"))
    try:
        shadow = RunDir.create(scratch, command, {"settings": dataclasses.asdict(settings), "seed": seed})
        (shadow.path / "checkpoints").symlink_to((run.path / "checkpoints").resolve(), target_is_directory=True)
        with shadow:
            train(settings, shadow, seed, True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    click.echo(str(run.path))
    return run


def _check_same_run(run, command, settings, seed):
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
                f"Run '{run.path}' was started with {_flag(key)} {stored.get(key)}; this command has {given.get(key)}. "
                f"Expected the run's own options (only {', '.join(map(_flag, RESUMABLE))} may differ), or another "
                "--name.")
