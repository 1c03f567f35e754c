"""Learning curves: a denoiser's PSNR and SSIM on held-out images while it trains, against steps and CPU time.

A `LearningCurve` corrupts its held-out images once (seeded), scores the classical methods on them once
(`baselines.csv`), and on each `record(model, step)` restores the same images with the model and appends
a row to `learning_curve.csv`: the step, the CPU seconds of training so far, and the PSNR and SSIM of
each image and their means. `plot()` draws `learning_curves.png`: PSNR and SSIM against steps and
against CPU seconds, each baseline a horizontal line, so a run shows where the model crosses each
classical method or that it has flattened below it.

CPU time is the process's (every thread, `time.process_time`), not wall time, so a run on a loaded
machine measures what training cost; the time the curve's own evaluations take is left out.
"""

import csv
import io
import pathlib
import time

import numpy as np
from matplotlib.figure import Figure

from deeprestore.restoration import evaluation
from deeprestore.restoration.apply import restore
from deeprestore.rundir import atomic_write

CURVE_FILE = "learning_curve.csv"
BASELINES_FILE = "baselines.csv"
PLOT_FILE = "learning_curves.png"
_FIXED_COLUMNS = ("step", "cpu_seconds", "psnr", "ssim")


class LearningCurve:
    """Held-out PSNR/SSIM of a model during training, written into `directory`.

    Args:
        directory: Folder of the curve's files (created).
        clean: `{name: (height, width, channels)}` clean held-out images in [0, 1].
        corruption: The `Corruption` making their inputs (seeded by `seed` and each image's position).
        seed: Seed of the corruption.
        baselines: Also score the classical methods (once).
        start: The step training starts from; rows after it (from a killed run) are dropped and the CPU
            seconds continue from the last row kept.
        clock: The CPU clock, in seconds.
    """

    def __init__(self, directory, clean, corruption, seed=0, baselines=True, start=0, clock=time.process_time):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.names = tuple(clean)
        self.clean = [clean[name] for name in self.names]
        self.inputs = [corruption(image, rng=(seed, index)) for index, image in enumerate(self.clean)]
        self.rows = [row for row in read_rows(self.directory / CURVE_FILE) if row["step"] <= start]
        self.cpu_offset = self.rows[-1]["cpu_seconds"] if self.rows else 0.0
        self.clock = clock
        self.baselines = self._baselines() if baselines else {}
        self.cpu_start = clock()  # after the baselines: they are not training
        self.evaluation_seconds = 0.0

    def _baselines(self):
        """`{method: (psnr, ssim)}` means over the held-out images of the input and each classical method."""
        path = self.directory / BASELINES_FILE
        if path.is_file():  # a resumed run: the same images, the same scores
            return {row["method"]: (float(row["psnr"]), float(row["ssim"])) for row in csv.DictReader(path.open())}
        outputs = {name: [method(image, None) for image in self.inputs]
                   for name, method in evaluation.classical_methods("denoise").items()}
        rows = evaluation.compare(self.clean, self.inputs, outputs)
        evaluation.save_table(self.directory, rows, stem=BASELINES_FILE.removesuffix(".csv"), images=list(self.names),
                              methods={row["method"]: {"psnr": row["psnr"], "ssim": row["ssim"]} for row in rows})
        return {row["method"]: (row["psnr"], row["ssim"]) for row in rows}

    def training_seconds(self):
        """CPU seconds spent so far on training: the process's, less the curve's own evaluations."""
        return self.cpu_offset + self.clock() - self.cpu_start - self.evaluation_seconds

    def record(self, model, step):
        """Scores the model on the held-out images at `step`, appends the row and returns it."""
        seconds = self.training_seconds()
        began = self.clock()
        row = {"step": int(step), "cpu_seconds": round(seconds, 2)}
        scores = []
        for name, image, clean in zip(self.names, self.inputs, self.clean):
            restored = np.clip(restore(model, image), 0.0, 1.0)
            scores.append((evaluation.psnr(clean, restored), evaluation.ssim(clean, restored)))
            row[f"psnr.{name}"], row[f"ssim.{name}"] = scores[-1]
        row["psnr"], row["ssim"] = (float(np.mean(values)) for values in zip(*scores))
        self.rows = [kept for kept in self.rows if kept["step"] < step] + [row]
        self._write()
        self.evaluation_seconds += self.clock() - began
        return row

    def _write(self):
        columns = [*_FIXED_COLUMNS, *(f"{measure}.{name}" for name in self.names for measure in ("psnr", "ssim"))]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({column: _rounded(row.get(column)) for column in columns} for row in self.rows)
        atomic_write(self.directory / CURVE_FILE, buffer.getvalue())

    def plot(self, title="held-out images"):
        """Draws PSNR and SSIM against steps and CPU seconds, the baselines as lines; returns the path."""
        return plot(self.directory / PLOT_FILE, self.rows, self.baselines, title)


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def read_rows(path):
    """The rows of a `learning_curve.csv` as dicts of numbers (an empty list when there is no file)."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    rows = []
    for row in csv.DictReader(path.open()):
        try:
            rows.append({key: float(value) if key != "step" else int(value) for key, value in row.items()})
        except (TypeError, ValueError):  # half a row from a kill mid-write
            continue
    return rows


def plot(path, rows, baselines, title="held-out images"):
    """PSNR and SSIM (means over the images) against steps and CPU seconds; baselines as horizontal lines.

    Args:
        path: The PNG to write.
        rows: Curve rows (`step`, `cpu_seconds`, `psnr`, `ssim`).
        baselines: `{method: (psnr, ssim)}`; `input` is drawn as "noisy input".
        title: The figure's title.

    Returns:
        The path written.
    """
    figure = Figure(figsize=(10, 7), layout="constrained")
    figure.suptitle(f"learning curve on {title}")
    lines = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))
    for row_index, measure in enumerate(("psnr", "ssim")):
        for column, (key, label) in enumerate((("step", "step"), ("cpu_seconds", "training CPU seconds"))):
            axes = figure.add_subplot(2, 2, 2 * row_index + column + 1)
            axes.plot([row[key] for row in rows], [row[measure] for row in rows], "o-", color="black",
                      markersize=3, label="model")
            for index, (method, scores) in enumerate(baselines.items()):
                name = "noisy input" if method == evaluation.INPUT_ROW else method
                axes.axhline(scores[row_index], linestyle=lines[index % len(lines)], color=f"C{index}",
                             label=f"{name} {scores[row_index]:.2f}" if measure == "psnr" else name)
            axes.set_xlabel(label)
            axes.set_ylabel("PSNR (dB)" if measure == "psnr" else "SSIM")
            if row_index == 0 and column == 0:
                axes.legend(fontsize="small")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path
