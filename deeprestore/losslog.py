"""Loss logs: named loss terms recorded step by step, one CSV per term.

A `LossLog` is a folder of CSV files, `<term>.csv` with columns `step,<context...>,value`, appended to
and flushed on every `log` call so that a killed run keeps everything it logged. Terms carry the
dotted names of objectives (`total`, `l2.block4_conv3`, `module.pool1_to_conv1_2`); context columns
(such as `octave`) say where in a schedule a step was taken. `plot` draws every term, and
`plot_curves` draws any named curves, with matplotlib's object API so no global state is touched.
"""

import csv
import itertools
import math
import pathlib
import re

import numpy as np
from matplotlib.figure import Figure

# Dots stay (they separate the parts of a term name); anything that could leave the folder or trouble
# a shell or file system becomes an underscore.
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")
_PLOT_COLUMNS = 3


def safe_file_stem(term):
    """The file-name stem used for `term`: dots kept, `/` and other odd characters replaced by `_`."""
    stem = _UNSAFE_CHARACTERS.sub("_", term)
    # A leading dot would hide the file, and "." or ".." would name a folder.
    return "_" + stem if not stem or stem.startswith(".") else stem


class LossLog:
    """Records named loss terms step by step into `<directory>/<term>.csv`.

    Appending to existing files is allowed, so a resumed run continues its own log.

    Args:
        directory: folder for the CSV files; created if missing.
    """

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files = {}  # term -> (open file, csv writer, context column names)
        self._terms_by_stem = {}

    def log(self, step, values, **context):
        """Appends one row per term and flushes it to disk.

        Args:
            step: the step number.
            values: dict mapping term name to a float (NaN is recorded as `nan`).
            **context: extra columns, e.g. `octave=2`; a term's columns are fixed by its first row.

        Raises:
            ValueError: if the context columns differ from those the term's file already has.
        """
        for term, value in values.items():
            file, writer, columns = self._open(term, tuple(context))
            if set(columns) != set(context):
                raise ValueError(f"Loss term {term!r} has context columns {columns}, "
                                 f"but was logged with {tuple(context)}")
            writer.writerow([int(step), *(context[column] for column in columns), float(value)])
            file.flush()

    def values(self, term):
        """The `(step, value)` pairs logged so far for `term`, read back from its file."""
        path = self.directory / f"{safe_file_stem(term)}.csv"
        return [(step, value) for step, value, _ in _read_rows(path)]

    def close(self):
        """Closes every open file; later `log` calls reopen them in append mode."""
        for file, _, _ in self._files.values():
            file.close()
        self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exception_info):
        self.close()

    @staticmethod
    def read(directory):
        """Reads every term in `directory` as `{file stem: float64 array of values}`, sorted by name."""
        return {path.stem: np.array([value for _, value, _ in _read_rows(path)], dtype=np.float64)
                for path in sorted(pathlib.Path(directory).glob("*.csv"))}

    def plot(self, path=None):
        """Draws one subplot per term, one line per context (e.g. per octave), and saves a PNG.

        The y axis is logarithmic for a term whose finite values are all positive.

        Args:
            path: destination PNG; defaults to `<directory>/losses.png`.

        Returns:
            The path written.
        """
        path = pathlib.Path(path) if path is not None else self.directory / "losses.png"
        csv_paths = sorted(self.directory.glob("*.csv"))
        columns = max(1, min(_PLOT_COLUMNS, len(csv_paths)))
        rows = max(1, math.ceil(len(csv_paths) / columns))
        figure = Figure(figsize=(5 * columns, 3.2 * rows), layout="constrained")
        for index, csv_path in enumerate(csv_paths):
            curves = {}
            rows_by_context = itertools.groupby(_read_rows(csv_path), key=lambda row: row[2])
            for context, group in rows_by_context:
                steps, values = zip(*[(step, value) for step, value, _ in group])
                label = ", ".join(f"{name}={setting}" for name, setting in context) or csv_path.stem
                previous_steps, previous_values = curves.get(label, ((), ()))
                curves[label] = (previous_steps + steps, previous_values + values)
            axes = figure.add_subplot(rows, columns, index + 1)
            _draw_curves(axes, curves, csv_path.stem, "step", "loss")
        if not csv_paths:
            figure.text(0.5, 0.5, "no losses logged", ha="center", va="center")
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        return path

    def _open(self, term, context_columns):
        if term in self._files:
            return self._files[term]
        stem = safe_file_stem(term)
        if self._terms_by_stem.setdefault(stem, term) != term:
            raise ValueError(
                f"Loss terms {self._terms_by_stem[stem]!r} and {term!r} would share '{stem}.csv'")
        path = self.directory / f"{stem}.csv"
        existing_header = _read_header(path)
        if existing_header is not None and not _ends_with_newline(path):
            # A process killed mid-row left half a line; end it so the next row starts cleanly.
            with open(path, "a", encoding="utf-8") as file:
                file.write("\n")
        # Append mode keeps what an earlier (possibly killed) process logged.
        file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - open in self._files until close()
        writer = csv.writer(file)
        if existing_header is None:
            writer.writerow(["step", *context_columns, "value"])
            columns = context_columns
        else:
            columns = tuple(existing_header[1:-1])
        self._files[term] = (file, writer, columns)
        return self._files[term]


def plot_curves(path, curves, title, xlabel, ylabel, logy=None):
    """Draws named curves on one axis and saves a PNG.

    Args:
        path: destination PNG.
        curves: dict mapping a label to an `(x, y)` pair of sequences.
        title: the figure's title.
        xlabel: the x axis label.
        ylabel: the y axis label.
        logy: log-scale y axis; `None` chooses it when every finite y is positive.

    Returns:
        The path written, as a `pathlib.Path`.
    """
    path = pathlib.Path(path)
    figure = Figure(figsize=(6, 4), layout="constrained")
    _draw_curves(figure.add_subplot(), curves, title, xlabel, ylabel, logy)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _draw_curves(axes, curves, title, xlabel, ylabel, logy=None):
    finite = [np.asarray(y, dtype=np.float64) for _, y in curves.values()]
    finite = np.concatenate([y[np.isfinite(y)] for y in finite]) if finite else np.array([])
    if logy is None:
        logy = finite.size > 0 and bool(np.all(finite > 0))
    for label, (x, y) in curves.items():
        axes.plot(x, y, label=label)  # NaN values leave gaps rather than breaking the plot
    if logy:
        axes.set_yscale("log")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if len(curves) > 1:
        axes.legend(fontsize="small")


def _read_header(path):
    """The header row of an existing, non-empty CSV file, or `None`."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, newline="", encoding="utf-8") as file:
        return next(csv.reader(file), None)


def _ends_with_newline(path):
    with open(path, "rb") as file:
        file.seek(-1, 2)
        return file.read(1) == b"\n"


def _read_rows(path):
    """Rows of a term's CSV as `(step, value, ((context column, setting), ...))`."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None) or []
        rows = []
        for row in reader:
            try:
                if len(row) == len(header):
                    rows.append((int(row[0]), float(row[-1]), tuple(zip(header[1:-1], row[1:-1]))))
            except ValueError:
                pass  # A row cut short by a kill mid-write is skipped, not fatal to the whole read.
        return rows
