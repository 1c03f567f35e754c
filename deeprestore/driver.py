"""One run's whole life, for every experiment of the registry (`deeprestore.recipes.registry`).

An experiment is one `Experiment` value: its settings class, the checks of its inputs, a setup done
once per run, and either a step over the run's items or a whole-run training step, with its `--dry-run`
estimate and its figures. This module turns each into a click command (options from the settings
fields, see `deeprestore.options`) and runs it: every input is checked before a backend is imported;
the run directory is created, joined (`--name`, the tasks of an array job) or resumed (`--resume`, or
`--name` of a training run); the loop over the pending items, with their seeds and completion markers,
is written here once; SIGTERM interrupts between two steps like Ctrl-C, an interrupted optimisation
keeps its current image as a partial result (`partial/`, never counted complete); and the run
directory is the last line printed, on success and on interruption, where it is followed by the
exact command that resumes or resubmits it.
"""

import contextlib
import dataclasses
import io
import os
import shlex
import signal
import sys
import types

import click

from deeprestore.errors import DeepRestoreError
from deeprestore.experiment import Context, output_name
from deeprestore.options import dry_run_option, given_options, settings_options

# `click.Context.meta` key of the whole command line after `deeprestore` (set by the root group), for
# the command that continues an interrupted run; `sys.argv` is not it when the CLI is invoked in-process.
ARGUMENTS_KEY = "deeprestore.arguments"


@dataclasses.dataclass
class State:
    """Global options, shared with every subcommand."""

    runs: str
    seed: int
    quiet: bool
    backend: str | None = None

    def load_backend(self):
        """Imports Keras with the chosen backend (see `use_backend`)."""
        use_backend(self.backend)

    def echo(self, message):
        if not self.quiet:
            click.echo(message, err=True)


# --- the command line -------------------------------------------------------------------------------


def name_option(training):
    """`--name NAME`: an array job's shared run, or a training run resumed when it exists."""
    if training:
        from deeprestore.resuming import RESUMABLE, flag

        text = ("Run directory <runs>/<command>/NAME: created if new; if it exists with these options (only "
                f"{', '.join(map(flag, RESUMABLE))} may differ) resumed from its last checkpoint, so a requeued or "
                "resubmitted job continues its run; refused if other options differ.")
    else:
        text = ("Run directory <runs>/<command>/NAME, shared by every task given the same name (e.g. "
                "$SLURM_ARRAY_JOB_ID): the first creates it, later ones and resubmissions join it if their settings "
                "match and skip images already complete.")
    return click.option("--name", default=None, metavar="NAME", help=text)


def resume_option():
    """`--resume RUN` of a training command."""
    from deeprestore.resuming import RESUMABLE, flag

    return click.option(
        "--resume", default=None, type=click.Path(exists=True, file_okay=False), metavar="RUN",
        help="Continue this run from its last checkpoint with its own settings; only "
             f"{', '.join(map(flag, RESUMABLE[:-1]))} and {flag(RESUMABLE[-1])} may change.")


def command(experiment):
    """The click command of an experiment: an option per settings field, then `--resume`/`--name` and
    `--dry-run` where it has them."""
    decorators = [settings_options(experiment.settings), *experiment.extra]
    if experiment.train is not None:
        decorators += [resume_option(), name_option(training=True)]
    elif experiment.named:
        decorators.append(name_option(training=False))
    if experiment.estimate is not None:
        decorators.append(dry_run_option())

    @click.pass_context
    def callback(context, **options):
        if experiment.prepare is not None:
            experiment.prepare(context, options)
        flags = {key: options.pop(key, None) for key in ("name", "resume", "dry_run")}
        run_experiment(context, experiment, options, **flags)

    for decorator in reversed(decorators):
        callback = decorator(callback)
    return click.command(experiment.name.split()[-1], help=experiment.summary)(callback)


def method_command(name, summary, experiments, method_help, refused=()):
    """One command running one of several experiments, chosen by `--method` (the first is the default).

    Each experiment lists its options (`Experiment.options`); the chosen method receives its own. An
    option of `refused` given with a method that does not take it is refused in one line (others are
    left unused, as they always were), as are `--name` and `--dry-run` with a method that has none.
    """
    methods = {experiment.method: experiment for experiment in experiments}
    seen, decorators, owners = set(), [], {}
    for experiment in experiments:
        for settings_class, only, prefix in experiment.options:
            fresh = tuple(field for field in only if field not in seen)
            seen.update(fresh)
            if fresh:
                decorators.append(settings_options(settings_class, only=fresh, prefix=prefix))
            for field in only:
                owners.setdefault(field, []).append(experiment.method)
    named = [method for method, experiment in methods.items() if experiment.named]
    estimated = [method for method, experiment in methods.items() if experiment.estimate is not None]
    decorators = [click.option("--method", type=click.Choice(list(methods)), default=experiments[0].method,
                               help=method_help), *decorators, name_option(training=False),
                  dry_run_option(prefix=f"{', '.join(estimated)}: ")]

    @click.pass_context
    def callback(context, method, name, dry_run, **options):
        experiment = methods[method]
        for field in given_options(context, options):
            if field in refused and method not in owners.get(field, ()):
                raise DeepRestoreError(f"{_spelling(context, field)} applies to --method {' and '.join(owners[field])} "
                                       f"only; got --method {method}.")
        if name is not None and method not in named:
            raise DeepRestoreError(f"--name shares a run among the tasks of an array job; got it with --method "
                                   f"{method}, expected --method {' or '.join(named)}.")
        if dry_run and method not in estimated:
            raise DeepRestoreError(f"--dry-run estimates --method {' and '.join(estimated)}; got --method {method}.")
        mine = {field: value for field, value in options.items() if method in owners.get(field, ())}
        run_experiment(context, experiment, mine, name=name, dry_run=dry_run)

    for decorator in reversed(decorators):
        callback = decorator(callback)
    return click.command(name, help=summary)(callback)


def commands(experiments, methods):
    """The click command of each experiment; experiments sharing a name share one command, by `--method`
    (`methods[name]`: what each method is, and the options refused with a method that does not take
    them, see `method_command`). A name of two words (`denoise train`) is a
    subcommand of the group of its first word, which the caller adds it to."""
    made = {}
    for experiment in experiments:
        if experiment.method is None:
            made[experiment.name] = command(experiment)
        elif experiment.name not in made:
            family = [other for other in experiments if other.name == experiment.name]
            made[experiment.name] = method_command(experiment.name, experiment.summary, family,
                                                   *methods[experiment.name])
    return made


def _spelling(context, name):
    return next((param.opts[0] for param in context.command.params if param.name == name),
                "--" + name.replace("_", "-"))


# --- a run's life -------------------------------------------------------------------------------------


def run_experiment(context, experiment, options, name=None, resume=None, dry_run=False):
    """Runs one experiment from its parsed options: checks, backend, dry run or run directory, the
    items or the training, then the run directory and how to continue it."""
    state = context.find_object(State)
    given = given_options(context, options)
    build = experiment.build or (lambda options, given: experiment.settings(**options))
    settings = build(options, given)
    if name is not None:
        from deeprestore.rundir import check_folder_name

        check_folder_name(name, "--name", "my-run")
    sources = experiment.check(settings) if experiment.check is not None else None
    state.load_backend()
    if dry_run:
        rows, steps = experiment.estimate(settings, state.seed)
        _print_estimates(experiment, settings, rows, steps)
        return None
    if experiment.train is not None:
        return train_run(context, experiment, settings, options, resume=resume, name=name)
    if experiment.validate is not None:
        experiment.validate(settings)
    return run_items(state, experiment, settings, sources, name)


def train_run(context, experiment, settings, options, resume=None, name=None):
    """The life of a training run: a new one, `--resume RUN`, or `--name NAME` (created, or resumed when it
    exists with the same options; a complete one is left as it is).

    Over several processes (one per machine, see `distributed`) every process runs the same command line,
    with `--name` or `--resume` so that all find one run directory: process 0 lives the run's life as
    above; the others wait until it has created or claimed the run, then train beside it (`_follow`).

    Raises:
        DeepRestoreError: Both `--resume` and `--name`, a named run of other options, a refused
            `--devices`, a multi-process job without `--name` or `--resume`, or what `resuming.reopen` raises.
    """
    import pathlib

    from deeprestore import backend, distributed, resuming
    from deeprestore.rundir import RunDir

    state = context.find_object(State)
    if resume is not None and name is not None:
        raise DeepRestoreError(f"Got --resume {resume} and --name {name}; expected one (--name resumes its run when it "
                               "exists).")
    cluster = distributed.cluster_from_environment()  # a bad description fails here, before any work
    if cluster is not None:
        if resume is None and name is None:
            raise DeepRestoreError(f"A training over {cluster.processes} processes got neither --name nor --resume; "
                                   "expected --name NAME (e.g. --name $SLURM_JOB_ID), so that every process finds the "
                                   "one run directory.")
        distributed.initialize()  # before the backend computes anything
        if not distributed.is_primary():
            return _follow(context, experiment, settings, options,
                           pathlib.Path(resume or pathlib.Path(state.runs) / experiment.folder / name))
    path = resume
    if name is not None and (pathlib.Path(state.runs) / experiment.folder / name).exists():
        run = RunDir.open(pathlib.Path(state.runs) / experiment.folder / name)
        resuming.check_same_run(run, experiment.folder, settings, state.seed)
        stored_steps = run.config["settings"].get("steps")
        if run.status == "complete" and settings.steps == stored_steps:
            distributed.barrier("run")  # the other processes find it complete too
            click.echo(f"Run {run.path} is already complete ({stored_steps} steps); nothing to do.", err=True)
            click.echo(str(run.path))
            return run
        path = run.path
    if path is None:
        if experiment.validate is not None:
            experiment.validate(settings)
        backend.check_devices(settings.devices)  # a refused --devices leaves no run directory
        run = start_run(state, experiment.folder, settings, name=name, join=False)
        seed, context_manager = state.seed, run
    else:
        run, settings, seed, _ = resuming.reopen(context, path, experiment.folder, experiment.settings, options,
                                                 experiment.stored_key)
        context_manager = resuming.resumed(run, settings)
    step_context = Context(settings, run, seed, not state.quiet, state.echo)
    with interrupted_says(run, experiment, name), context_manager, sigterm_interrupts():
        if distributed.process_count() > 1:
            run.checkpoints_dir  # noqa: B018 (created here, read by the other processes)
            distributed.barrier("run")  # the run exists: the other processes go on (`_follow`)
        experiment.train(step_context, path is not None)
        if experiment.figures is not None:
            experiment.figures(step_context, None)
    click.echo(str(run.path))
    return run


def _follow(context, experiment, settings, options, path):
    """A process other than 0 of a multi-process training: waits until process 0 has created or claimed
    the run at `path`, takes its stored settings and seed (the options it may change as given), and runs
    the training in step with process 0 in a private scratch run that is deleted at the end, its
    `checkpoints/` the shared run's (read on resume; only process 0 writes there). Prints the shared run.

    Raises:
        DeepRestoreError: Process 0 stopped before training (its log says why), or what `resuming` raises.
    """
    import pathlib
    import shutil
    import tempfile

    from deeprestore import distributed, resuming
    from deeprestore.rundir import RunDir

    state = context.find_object(State)
    try:
        distributed.barrier("run")
    except Exception as error:
        if not distributed.is_lost_peer(error):
            raise
        raise DeepRestoreError(f"Process 0 of the job stopped before training ({' '.join(str(error).split())[:120]}); "
                               "expected it to create or resume the run: see its log.") from None
    run = RunDir.open(path)
    if run.status == "complete" and settings.steps == run.config["settings"].get("steps"):
        click.echo(str(run.path))
        return run
    _, settings, seed, _ = resuming.check_resume(context, run, experiment.folder, experiment.settings, options,
                                             experiment.stored_key)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"deeprestore-process{distributed.process_index()}-"))
    try:
        shadow = RunDir.create(scratch, experiment.folder, {"settings": config_of(settings), "seed": seed})
        (shadow.path / "checkpoints").symlink_to((run.path / "checkpoints").resolve(), target_is_directory=True)
        step_context = Context(settings, shadow, seed, not state.quiet, state.echo)
        with shadow:
            experiment.train(step_context, True)
            if experiment.figures is not None:
                experiment.figures(step_context, None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    click.echo(str(run.path))
    return run


def _print_estimates(experiment, settings, rows, steps):
    from deeprestore.estimate import format_estimates

    words = experiment.name + (f" --method {experiment.method}" if experiment.method not in (None, "optimise") else "")
    network = settings["network"] if isinstance(settings, dict) else settings.network
    click.echo(f"Dry run: {words} on {network}, no run directory created.")
    click.echo(format_estimates(rows, steps=steps))


def config_of(settings):
    """The settings as a plain dict, for `config.json`."""
    if dataclasses.is_dataclass(settings):
        return dataclasses.asdict(settings)
    return dict(vars(settings)) if isinstance(settings, types.SimpleNamespace) else dict(settings)


def run_items(state, experiment, settings, sources, name=None):
    """Creates or joins the run, then runs the setup once and the step over each batch of pending items
    (or once, for a run without items), marking each item complete after its outputs."""
    items = None if sources is None else [output_name(source, position) for position, source in enumerate(sources)]
    run = start_run(state, experiment.folder, config_of(settings), name=name, items=items)
    shard = getattr(settings, "shard", None)
    context = Context(settings, run, state.seed, not state.quiet, state.echo,
                      single=sources is not None and len(sources) == 1 and shard is None and name is None)
    with interrupted_says(run, experiment), run, sigterm_interrupts():
        if sources is None:
            _whole_run_step(context, experiment, name)
        else:
            pending = pending_items(run, sources, shard)
            if pending:
                prepared = experiment.setup(context)
                size = experiment.batch or len(pending)
                for start in range(0, len(pending), size):
                    from deeprestore import interrupts

                    interrupts.raise_if_requested()
                    batch = pending[start:start + size]
                    records = _step(context, experiment, prepared, batch)
                    for position, source, item in batch:
                        run.complete_item(item, {"position": position, "source": source, **records[item]})
                        _drop_partial(run, item)
                if experiment.figures is not None:
                    experiment.figures(context, prepared)
    click.echo(str(run.path))
    return run


def _whole_run_step(context, experiment, name):
    """The one step of a run without items (`texture`); a named run is marked complete after it (its
    resubmission then does nothing), and the partial results it continued from go."""
    run = context.run
    if name is not None and run.item_complete(experiment.folder):
        print(f"Skipping {experiment.name}: already complete in {run.path}.", file=sys.stderr, flush=True)
        return
    _step(context, experiment, experiment.setup(context), None)
    if name is not None:
        run.complete_item(experiment.folder, {})
    for partial in sorted((run.path / "partial").glob(f"{experiment.folder}_*.json")):
        _drop_partial(run, partial.stem)


def pending_items(run, sources, shard_text):
    """This task's inputs not yet complete in the run, as `(position, source, name)`.

    Positions in the whole list name the outputs, so the shards of an array job never collide. Items
    with a completion marker (from an earlier attempt of a named run) are skipped, and a line on stderr
    says how many, whatever `--quiet`: a resubmitted job's log must show what it did not redo.
    """
    from deeprestore.sharding import shard

    selected = [(position, source, output_name(source, position))
                for position, source in shard(enumerate(sources), shard_text)]
    pending = [item for item in selected if not run.item_complete(item[2])]
    if len(pending) < len(selected):
        print(f"Skipping {len(selected) - len(pending)} of {len(selected)} images already complete in {run.path}.",
              file=sys.stderr, flush=True)
    return pending


def _step(context, experiment, prepared, batch):
    """One step; an interruption inside an optimisation keeps its current images as partial results."""
    try:
        return experiment.step(context, prepared, batch)
    except KeyboardInterrupt as error:
        partial = getattr(error, "partial", None)
        if partial is not None:
            names = ([f"{experiment.folder}_{index:03d}" for index in range(len(partial.variables))] if batch is None
                     else [item for _, _, item in batch])
            _save_partial(context.run, names, partial, str(error).strip())
        raise


def _save_partial(run, names, partial, signal_name):
    """Writes each item's current variables (`partial/<name>.npy`), its image where they are pixels
    (`.png`) and what it is (`.json`: partial, the step reached of how many, the step its optimisation
    started after and where in the run it was, what stopped it)."""
    import numpy as np

    from deeprestore.images import save_image
    from deeprestore.rundir import atomic_write, to_json

    folder = run.path / "partial"
    folder.mkdir(exist_ok=True)
    for index, name in enumerate(names[:len(partial.variables)]):
        buffer = io.BytesIO()
        np.save(buffer, partial.variables[index])
        atomic_write(folder / f"{name}.npy", buffer.getvalue())
        if partial.images is not None and partial.images.ndim == 4 and partial.images.shape[-1] == 3:
            save_image(folder / f"{name}.png", np.clip(partial.images[index], 0.0, 1.0))
        atomic_write(folder / f"{name}.json", to_json({
            "partial": True, "step": partial.step, "of": partial.steps, "stage": partial.stage,
            "first_step": partial.first_step, "context": partial.context,
            "stopped_by": signal_name or "an interruption"}))
    run.partials = len(names)


def _drop_partial(run, name):
    for suffix in (".npy", ".png", ".json"):
        (run.path / "partial" / f"{name}{suffix}").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (run.path / "partial").rmdir()  # only when empty


def start_run(state, command, settings, name=None, items=None, uses_backend=True, join=True):
    """Creates the run directory of a command, with every resolved option in its config.

    A command that computes nothing with Keras passes `uses_backend=False`: its config then records
    no backend and numpy's version, and Keras is not imported.

    With `name`, the run is `<runs>/<command>/<name>/`, shared by every task that gives the same name:
    the first creates it, the others join it (see `RunDir.join`); its config leaves out the shard.
    `items` are the output names of the whole list of inputs, recorded so gaps can be found later.
    With `join=False` a named run is one process's own (a training command's `--name`): created, never
    joined.
    """
    from deeprestore.rundir import RunDir

    settings = config_of(settings)
    if uses_backend:
        from deeprestore import backend

        backend.check_supported()
        machine = {"backend": backend.name(), "device": backend.device(), "versions": backend.versions()}
    else:
        import numpy

        machine = {"backend": None, "device": "cpu", "versions": {"numpy": numpy.__version__}}
    config = {"settings": settings, "seed": state.seed, **machine, **({} if items is None else {"items": list(items)})}
    if name is None or not join:
        return RunDir.create(state.runs, command, config, name=name)
    shard = settings.pop("shard", None)
    return RunDir.join(state.runs, command, name, config, shard=shard)


def start_run_recipe(state, command, settings, recipe, name=None, sources=None, uses_backend=True):
    """A run of a command outside the registry (`denoise apply`, `describe evaluate`): creates (or, with
    `name`, joins) the run directory, runs `recipe(run)` inside it and prints the directory last."""
    items = None if sources is None else [output_name(source, position) for position, source in enumerate(sources)]
    run = start_run(state, command, settings, name=name, items=items, uses_backend=uses_backend)
    with interrupted_says(run), run, sigterm_interrupts():
        recipe(run)
    click.echo(str(run.path))
    return run


def continue_command(run, experiment=None):
    """The exact command that continues `run`: `--resume RUN` for a training run, else the command line
    again (a named run's resubmission skips what is complete; an unnamed one starts afresh)."""
    if experiment is not None and experiment.train is not None:
        from deeprestore import backend

        return f"deeprestore --backend {backend.name()} {experiment.name} --resume {shlex.quote(str(run.path))}"
    context = click.get_current_context(silent=True)
    arguments = context.meta.get(ARGUMENTS_KEY) if context is not None else None
    return shlex.join(["deeprestore", *(sys.argv[1:] if arguments is None else arguments)])


@contextlib.contextmanager
def interrupted_says(run, experiment=None, name=None):
    """Says on stderr, whatever `--quiet`, which run an interruption stopped and how to continue it,
    then prints the run directory and the command that continues it as the last lines on stdout: a
    cluster job's log must tell what to resubmit, not only "Interrupted."."""
    try:
        yield
    except KeyboardInterrupt as error:
        detail = str(error).strip()
        if detail and not detail.endswith("."):  # a deferred signal's name: "SIGTERM"
            detail = f"Stopped by {detail}."
        partials = getattr(run, "partials", 0)
        kept = ""
        if partials:
            plural = partials != 1
            then = (f"a resubmission continues from {'them' if plural else 'it'}"
                    if experiment is not None and experiment.partial else "a resubmission starts the item afresh")
            kept = (f" The current image{'s' * plural} of the interrupted item{'s' * plural} "
                    f"{'are' if plural else 'is'} kept in {run.path / 'partial'} (partial, not complete; {then}).")
        hint = _hint(run, experiment, name or run.name)
        click.echo(f"Interrupted: {detail + ' ' if detail else ''}Run {run.path} is marked interrupted.{kept} {hint}",
                   err=True)
        click.echo(str(run.path))
        click.echo(continue_command(run, experiment))
        raise


def _hint(run, experiment, name):
    if experiment is not None and experiment.train is not None:
        again = f", or run the same command again (--name {name})" if name is not None else ""
        return f"Continue it from its last checkpoint with: {continue_command(run, experiment)}{again}."
    if name is not None:
        return f"Resubmit the same command (--name {name}) to continue; it skips the images already complete."
    return "An unnamed run is not continued: run the command again (with --name, a rerun continues a run)."


def sigterm_interrupts():
    """Makes SIGTERM (a cluster pre-empting the job) interrupt like Ctrl-C, between two steps (see
    `interrupts`): the run is marked `interrupted` and the command exits with 130, and a resubmission
    with `--name` redoes only the images not yet complete. Training defers SIGINT too, and checkpoints
    before it stops."""
    from deeprestore import interrupts

    return interrupts.deferred((signal.SIGTERM,))


# --- the backend ----------------------------------------------------------------------------------------


def use_backend(name):
    """Selects the Keras backend and imports Keras, hiding the backend's native start-up log lines.

    TensorFlow's C++ libraries write several lines to file descriptor 2 when they load, whatever the
    log-level settings; they say nothing a user can act on, so they go to /dev/null unless
    DEEPRESTORE_DEBUG is set. Python errors raised by the import are not affected.
    """
    if "keras" in sys.modules:
        import keras

        if name is not None and keras.backend.backend() != name:
            raise DeepRestoreError(
                f"Keras is already loaded with backend '{keras.backend.backend()}'; cannot switch to '{name}'."
            )
        return
    if name is not None:
        os.environ["KERAS_BACKEND"] = name
    try:
        with contextlib.nullcontext() if os.environ.get("DEEPRESTORE_DEBUG") else native_stderr_silenced():
            from deeprestore import backend, distributed

            if not distributed.described():  # a multi-process training starts its engine first (`initialize`)
                backend.device()
    except ImportError as error:
        raise DeepRestoreError(
            f"Keras backend '{os.environ.get('KERAS_BACKEND', 'tensorflow')}' could not be loaded ({error}); "
            "expected it installed (`pip install -e .[jax]` for JAX)."
        ) from None


@contextlib.contextmanager
def native_stderr_silenced():
    """Points file descriptor 2 at /dev/null for the duration (Python's sys.stderr is kept)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
