"""What an experiment is, to the driver (`deeprestore.driver`) and the registry (`recipes.registry`): an
`Experiment` value names its settings and its parts; a `Context` is what each part is called with.
"""

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: what the driver needs to run it, every part but `name` and `settings` optional.

    Attributes:
        name: The command, e.g. `dream` or `denoise train`; its run folder is the name with `-` for spaces.
        settings: The settings dataclass; each field is an option.
        summary: The command's help.
        check: `settings -> sources or None`, without a backend: refuses a bad input in one line and
            returns the run's items (input paths), or None for a run without items.
        setup: `Context -> state`, once per run, after the backend is loaded (networks, targets).
        step: `(Context, state, items) -> {name: record}` for the items `(position, source, name)` of
            one batch; the driver marks each complete with its record once the step returns. Called
            once with `items=None` for a run without items.
        batch: Items per step; None: all of a task's pending items in one batch.
        figures: `(Context, state) -> None`, once after the loop (plots of the whole run).
        train: `(Context, resume) -> None`, a whole-run training step (checkpoints, `--resume`).
        estimate: `(settings, seed) -> (rows, steps)` for `--dry-run`: `[(label, Estimate)]` and the
            steps of each row (or one count for all).
        method: Its `--method` value, where one command runs several experiments (see `method_command`).
        options: `((settings class, field names or None, help prefix), ...)`: the options of a method
            experiment, sharing a command with others (default: every field of `settings`).
        build: `(options, given) -> settings` where the settings are more than `settings(**options)`.
        named: Whether `--name` shares the run among the tasks of an array job.
        stored_key: The config entry a resume compares given options with (see `reopen`).
        partial: Whether the step continues an interrupted item from its partial result.
        validate: `settings -> None`, after the backend loads and before a run directory is made: the
            checks that need the backend (a training model's name and sizes).
        extra: Click decorators of options the settings do not hold (old spellings).
        prepare: `(click context, options) -> None`, turning `extra` options into settings fields.
    """

    name: str
    settings: type
    summary: str = ""
    check: object = None
    setup: object = None
    step: object = None
    batch: int | None = 1
    figures: object = None
    train: object = None
    estimate: object = None
    method: str | None = None
    options: tuple = ()
    build: object = None
    named: bool = True
    stored_key: str = "settings"
    partial: bool = False
    validate: object = None
    extra: tuple = ()
    prepare: object = None

    @property
    def folder(self):
        return self.name.replace(" ", "-")


@dataclasses.dataclass
class Context:
    """What a step sees: the settings, the run, the seed, and where to say things."""

    settings: object
    run: object
    seed: int
    show_progress: bool
    echo: object
    single: bool = False  # one input, unsharded, unnamed: its outputs go into the run directory itself

    def notify(self, message):
        """Prints a notice (unless `--quiet`) and keeps it in the run's `notices.txt`."""
        self.echo(message)
        self.run.note(message)

    def partial(self, name):
        """`(variables, record)` of the item's partial result, or None when it has none."""
        folder = self.run.path / "partial"
        try:
            record = json.loads((folder / f"{name}.json").read_text())
            import numpy as np

            return np.load(folder / f"{name}.npy", allow_pickle=False), record
        except (OSError, ValueError):
            return None


def output_name(source, index):
    """A file-name stem for an input, unique within a run: its position in the whole list and its stem."""
    stem = str(source).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{index:03d}_{stem}"
