"""Measures the texture candidates the `texture` command's defaults were chosen from (issue 20, item 2).

Usage: `PYTHONPATH=. python experiments/texture_defaults.py [--only pixels --only fourier ...] [--runs FOLDER]`

Each candidate is a `deeprestore texture` command line, run on each bundled texture source (brick, gravel,
grass: scikit-image's samples, all grey) at 128 px from seed 0, with VGG16's offline weights (the HED
edge detector's trunk, the only VGG16 weights that load without a network). Each output PNG is then
measured against the source as the run saw it (256 px):

- `structure`: `texture_measures.structure_distance`, the RMS difference of the luminance's normalised
  autocorrelations at lags up to 32 px (0: the output repeats like the source);
- `colour`: `texture_measures.colour_deviation`, mean deviation from grey in 8-bit steps (the sources are grey);
- `paper_loss`: Gatys et al.'s texture loss, `sum_l E_l` over conv1_1 and pool1 .. pool4 with equal weights
  1, `E_l = sum (G - A)^2 / (4 N_l^2)` with Grams divided by the positions `M_l` (the paper's
  `1 / (4 N^2 M^2) sum (G - A)^2` when output and source have the same size);
- `our_loss`: the command's own Gram loss, `sum_l w_l ||G - A||^2 / ||A||^2` with `w_l = 1/5`, without priors;
- `cpu_s`: the command's CPU time (user + system, every thread, start-up included), `iterations` the
  L-BFGS iterations it ran, `last_10_fall` the loss's relative fall over its last 10 iterations.

Rows go to `docs/experiments/texture_defaults.csv` and `.json` as they are measured (a rerun measures
only what is missing; delete the JSON to start over), and the outputs to `docs/figures/texture_defaults.png`.
"""

import argparse
import csv
import json
import os
import pathlib
import resource
import shlex
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "experiments" / "texture_defaults"  # .csv and .json
FIGURE = ROOT / "docs" / "figures" / "texture_defaults.png"

SOURCES = ("brick", "gravel", "grass")  # every texture among the bundled samples
SIZE = 128  # output side, pixels
SOURCE_SIZE = 256  # the command's default --source-size
SEED = 0
COMMON = f"texture --weights offline --size {SIZE} --source-size {SOURCE_SIZE}"
# Gatys et al.'s layers (VGG's conv1_1 is the ReLU output in Caffe), each weighted 1 in the paper's loss.
PAPER_LAYERS = ("block1_conv1", "block1_pool", "block2_pool", "block3_pool", "block4_pool")

# name: the options after COMMON, every one that differs between candidates spelled out. Fourier without a
# prior at 100 steps is the default before this measurement.
CANDIDATES = {
    "fourier": "--parametrisation fourier --colour-weight 0 --tv-weight 0 --steps 100",
    "pixels": "--parametrisation pixels --colour-weight 0 --tv-weight 0 --steps 100",
    "pixels+colour": "--parametrisation pixels --colour-weight 1 --tv-weight 0 --steps 100",
    "pixels+tv": "--parametrisation pixels --colour-weight 0 --tv-weight 0.5 --steps 100",
    "pixels+colour+tv": "--parametrisation pixels --colour-weight 1 --tv-weight 0.5 --steps 100",
    # The chosen candidate with longer budgets: where its loss stops falling (`last_10_fall`).
    "pixels+colour@200": "--parametrisation pixels --colour-weight 1 --tv-weight 0 --steps 200",
    "pixels+colour@400": "--parametrisation pixels --colour-weight 1 --tv-weight 0 --steps 400",
}
COLUMNS = ("candidate", "source", "structure", "colour", "paper_loss", "our_loss", "cpu_s", "iterations",
           "last_10_fall", "options")


def run_texture(options, source, runs):
    """Runs one `deeprestore texture` command; returns its run directory and CPU seconds."""
    command = [sys.executable, "-m", "deeprestore", "--runs", str(runs), "--seed", str(SEED), "--quiet",
               *shlex.split(COMMON), "--source", source, *shlex.split(options)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{completed.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return pathlib.Path(completed.stdout.strip().splitlines()[-1]), cpu


class Losses:
    """Both Gram losses of an output against its source, with the network the runs used."""

    def __init__(self):
        from deeprestore.networks import create_network
        from deeprestore.probes import FeatureProbe

        self.network = create_network("vgg16", "offline", "average")
        self.probe = FeatureProbe(self.network, PAPER_LAYERS)

    def grams(self, image):
        from deeprestore.objectives import gram_numpy

        features = self.probe.features(np.asarray(image, np.float32)[None])
        return {layer: gram_numpy(features[layer][0]).astype(np.float64) for layer in PAPER_LAYERS}

    def __call__(self, source, output):
        """`(paper's loss, our loss)`."""
        targets, grams = self.grams(source), self.grams(output)
        paper = sum(np.sum((grams[layer] - targets[layer]) ** 2) / (4 * targets[layer].shape[0] ** 2)
                    for layer in PAPER_LAYERS)
        ours = sum(np.sum((grams[layer] - targets[layer]) ** 2) / np.sum(targets[layer] ** 2)
                   for layer in PAPER_LAYERS) / len(PAPER_LAYERS)
        return float(paper), float(ours)


def measure(candidate, source, runs, losses):
    from deeprestore.images import load_image
    from deeprestore.losslog import LossLog
    from deeprestore.texture_measures import colour_deviation, structure_distance

    run, cpu = run_texture(CANDIDATES[candidate], source, runs)
    source_image = load_image(str(run / "images" / f"source_{source}.png"))
    output = load_image(str(run / "outputs" / "texture_000.png"))
    paper, ours = losses(source_image, output)
    total = LossLog.read(run / "losses")["total"]
    fall = (total[-11] - total[-1]) / total[-1] if len(total) > 10 else float("nan")
    row = {"candidate": candidate, "source": source, "structure": structure_distance(source_image, output),
           "colour": colour_deviation(output), "paper_loss": paper, "our_loss": ours, "cpu_s": cpu,
           "iterations": len(total), "last_10_fall": fall, "options": CANDIDATES[candidate]}
    return row, output, source_image


def write_table(rows):
    TABLE.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    with TABLE.with_suffix(".csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_format(row[column]) for column in COLUMNS])
    means = {}
    for row in rows:
        means.setdefault(row["candidate"], []).append(row)
    with TABLE.with_name(TABLE.name + "_means.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(("candidate", "sources", "structure", "colour", "paper_loss", "our_loss", "cpu_s"))
        for candidate, group in means.items():
            writer.writerow([candidate, len(group)] + [
                _format(float(np.mean([row[column] for row in group])))
                for column in ("structure", "colour", "paper_loss", "our_loss", "cpu_s")])


def _format(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return value


def write_figure(rows, images_folder):
    """One row per source: the source's centre at the output size, then each candidate's output."""
    from deeprestore import figures
    from deeprestore.images import load_image

    candidates = list(dict.fromkeys(row["candidate"] for row in rows))
    grid = []
    for source in SOURCES:
        cells = [load_image(source, SOURCE_SIZE)[:SIZE, :SIZE]]
        for candidate in candidates:
            path = images_folder / f"{candidate}_{source}.png"
            cells.append(load_image(str(path)) if path.exists() else np.ones((SIZE, SIZE, 3), np.float32))
        grid.append(cells)
    grid = figures.image_grid(grid, column_titles=["source (crop)", *candidates], row_titles=SOURCES)
    figures.save_figure(FIGURE, grid)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(CANDIDATES), help="Measure only these candidates.")
    parser.add_argument("--runs", type=pathlib.Path, help="Keep the run directories in this folder.")
    options = parser.parse_args()
    from deeprestore.images import save_image

    path = TABLE.with_suffix(".json")
    rows = json.loads(path.read_text()) if path.exists() else []
    images_folder = ROOT / "experiments" / "texture_outputs"  # the measured PNGs, for the figure
    images_folder.mkdir(exist_ok=True)
    losses = Losses()
    with tempfile.TemporaryDirectory() as temporary:
        runs = options.runs or pathlib.Path(temporary)
        for candidate in options.only or CANDIDATES:
            for source in SOURCES:
                if any(row["candidate"] == candidate and row["source"] == source for row in rows):
                    continue
                row, output, _ = measure(candidate, source, runs, losses)
                save_image(images_folder / f"{candidate}_{source}.png", output)
                rows = [existing for existing in rows if existing["candidate"] in CANDIDATES] + [row]
                rows.sort(key=lambda row: (list(CANDIDATES).index(row["candidate"]), SOURCES.index(row["source"])))
                write_table(rows)
                print(json.dumps({key: _format(value) for key, value in row.items()}), flush=True)
    write_figure(rows, images_folder)


if __name__ == "__main__":
    main()
