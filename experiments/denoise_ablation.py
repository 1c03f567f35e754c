"""What holds the learned denoisers back: an ablation at equal CPU budgets, scored on held-out photos.

Each row trains one configuration for the same budget of process CPU seconds (`--budget`; the steps
that fit are measured on a few calibration steps first), through the toolkit's one training path
(`training.train`), on the bundled photos but the held-out ones, then restores the held-out photos
(`settings.HELD_OUT_SAMPLES`, grey, longer side 256, Gaussian noise of deviation 0.1, as `denoise
train` scores them) and scores PSNR and SSIM. The classical methods (total variation, NL-means,
wavelet and, when the `bm3d` package is installed, BM3D) are scored on the same noisy images. Rows
change one thing at a time from the reference row (DnCNN of 10 convolutions of 32 maps with batch
normalisation, MSE, Adam at 1e-3 with cosine decay, batches of 16 40x40 patches, rotations and
flips), or, once batch normalisation proved the largest handicap, one more thing from the reference
without it; the first two rows are the paper's 17x64 network (with the toolkit's former defaults, then
with MSE) and the last seed 004's U-Net at its defaults.

CPU seconds are the process's (`time.process_time`, every thread), so that a loaded machine measures
what training cost, not how long it waited; on a machine shared with other jobs they still run higher
than on an idle one (contention for caches and cores).

Usage: python3 experiments/denoise_ablation.py [--budget 60] [--rows 1,3] [--out results/denoise_ablation]
Writes rows.csv (one row per finished configuration; a rerun skips those done), table.md and table.csv.
"""

import argparse
import csv
import dataclasses
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

from deeprestore import images as image_io
from deeprestore import settings
from deeprestore.restoration import corruptions, data, evaluation, models
from deeprestore.restoration.apply import restore
from deeprestore.training import Schedule, Storage, train

BUDGET = 60  # CPU seconds of training per row
CORRUPTION = "gaussian:0.1"  # sigma 25.5 on the 0-255 scale, the paper's sigma-25 case
TEST_SIZE = 256  # longer side of the held-out photos, as `denoise train` scores them
CALIBRATION_STEPS = 6  # timed steps (after 2 untimed ones) that size each row's run
NATURAL_PHOTOS = ("chelsea", "coffee", "rocket")  # the training photos that are neither texture nor text
SEED = 0


@dataclasses.dataclass(frozen=True)
class Row:
    """One configuration: a DnCNN (`depth` x `filters`) or seed 004's U-Net, and how it is trained."""

    label: str
    network: str = "dncnn"
    depth: int = 10
    filters: int = 32
    batch_norm: bool = True
    residual: bool = True
    loss: str = "mse"
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    batch_size: int = 16
    patch_size: int = 40
    augmented: bool = True
    photos: tuple = ()  # empty: every bundled photo but the held-out ones


REFERENCE = "DnCNN 10x32, MSE, Adam 1e-3 cosine, 16 x 40x40, flips"
ROWS = (
    Row("paper DnCNN 17x64, former defaults (MAE)", depth=17, filters=64, loss="mae"),
    Row("paper DnCNN 17x64, MSE", depth=17, filters=64),
    Row(REFERENCE),
    Row("reference, MAE", loss="mae"),
    Row("reference, no batch normalisation", batch_norm=False),
    Row("reference, no residual (predicts the clean image)", residual=False),
    Row("reference, no rotations or flips", augmented=False),
    Row("reference, 3 natural photos only", photos=NATURAL_PHOTOS),
    Row("no batch normalisation, MAE", batch_norm=False, loss="mae"),
    Row("no batch normalisation, learning rate 3e-3", batch_norm=False, learning_rate=3e-3),
    Row("no batch normalisation, 3 natural photos only", batch_norm=False, photos=NATURAL_PHOTOS),
    Row("U-Net (seed 004), MAE", network="unet", loss="mae", patch_size=32),
)


def held_out(corruption):
    """`(names, clean, noisy)` of the held-out photos, grey, noised with seeds `(SEED, index)`."""
    names = settings.HELD_OUT_SAMPLES
    clean = [data.to_channels(image_io.load_image(name, TEST_SIZE), 1) for name in names]
    noisy = [corruption(image, rng=(SEED, index)) for index, image in enumerate(clean)]
    return names, clean, noisy


def build(row, steps):
    """The row's compiled model; the cosine schedule decays over `steps`."""
    if row.network == "unet":
        model = models.unet(1, seed=SEED)
    else:
        model = models.dncnn(1, seed=SEED, depth=row.depth, filters=row.filters, batch_norm=row.batch_norm,
                             residual=row.residual)
    return models.compile_model(model, row.loss, "adam", row.learning_rate,
                                decay_steps=steps if row.schedule == "cosine" else None)


def patches(row, corruption):
    photos = row.photos or tuple(name for name in image_io.SAMPLES if name not in settings.HELD_OUT_SAMPLES)
    clean = [data.to_channels(image_io.load_image(name), 1) for name in photos]
    return data.PatchData.from_images(clean, row.patch_size, corruption, data.Sampling(row.batch_size, seed=SEED),
                                      augmented=row.augmented, names=photos)


def steps_within(row, source, budget):
    """The steps of `row` that fit in `budget` CPU seconds, from the cost of a few timed steps."""
    model = build(row, None)
    for step in range(2):  # tracing and first-call costs are not a step's
        model.train_on_batch(*source.batch(step))
    began = time.process_time()
    for step in range(CALIBRATION_STEPS):
        model.train_on_batch(*source.batch(step))
    return max(1, int(budget / ((time.process_time() - began) / CALIBRATION_STEPS)))


def run_row(row, budget, corruption, heldout):
    """Trains `row` for `budget` CPU seconds and scores it; returns the result row."""
    source = patches(row, corruption)
    steps = steps_within(row, source, budget)
    model = build(row, steps)
    began = time.process_time()
    with tempfile.TemporaryDirectory() as checkpoints:
        train(model, source.batch, Schedule(steps=steps, checkpoint_every=steps), Storage(checkpoints))
    cpu = time.process_time() - began
    names, clean, noisy = heldout
    restored = [np.clip(restore(model, image), 0.0, 1.0) for image in noisy]
    result = {"row": row.label, "steps": steps, "cpu_seconds": round(cpu, 1),
              "parameters": models.trainable_parameters(model)}
    for name, reference, image in zip(names, clean, restored):
        result[f"psnr.{name}"] = round(evaluation.psnr(reference, image), 2)
        result[f"ssim.{name}"] = round(evaluation.ssim(reference, image), 4)
    result["psnr"] = round(float(np.mean([result[f"psnr.{name}"] for name in names])), 2)
    result["ssim"] = round(float(np.mean([result[f"ssim.{name}"] for name in names])), 4)
    return result


def baselines(heldout):
    """The noisy input and each classical method on the held-out photos, as result rows."""
    names, clean, noisy = heldout
    results = []
    methods = {"input": lambda image, mask: image, **evaluation.classical_methods("denoise")}
    for method, function in methods.items():
        began = time.process_time()
        outputs = [function(image, None) for image in noisy]
        result = {"row": "noisy input" if method == "input" else method, "steps": "",
                  "cpu_seconds": round(time.process_time() - began, 1), "parameters": ""}
        for name, reference, image in zip(names, clean, outputs):
            result[f"psnr.{name}"] = round(evaluation.psnr(reference, image), 2)
            result[f"ssim.{name}"] = round(evaluation.ssim(reference, image), 4)
        result["psnr"] = round(float(np.mean([result[f"psnr.{name}"] for name in names])), 2)
        result["ssim"] = round(float(np.mean([result[f"ssim.{name}"] for name in names])), 4)
        results.append(result)
    return results


def read(path):
    return list(csv.DictReader(path.open())) if path.is_file() else []


def write(path, results):
    columns = list(dict.fromkeys(key for result in results for key in result))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(results)


def table(results, names):
    """`(header, rows)`: each configuration, then the classical methods, as text cells."""
    header = ["configuration", "steps", "CPU s", *(f"PSNR {name}" for name in names), "mean PSNR", "mean SSIM"]
    rows = [[result["row"], str(result["steps"]) or "-", str(result["cpu_seconds"]),
             *(str(result[f"psnr.{name}"]) for name in names), str(result["psnr"]), str(result["ssim"])]
            for result in results]
    return header, rows


def markdown(header, rows, names, budget):
    lines = [f"Held-out photos {', '.join(names)} (grey, {TEST_SIZE} px, {CORRUPTION}); training budget "
             f"{budget:g} CPU s per row.", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=BUDGET, help="CPU seconds of training per row")
    parser.add_argument("--rows", default="", help="comma-separated row numbers (1-based); default all")
    parser.add_argument("--out", default="results/denoise_ablation", help="output folder")
    arguments = parser.parse_args()
    out = pathlib.Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    corruption = corruptions.parse(CORRUPTION)
    heldout = held_out(corruption)
    chosen = [ROWS[int(n) - 1] for n in arguments.rows.split(",")] if arguments.rows else list(ROWS)
    path = out / "rows.csv"
    results = read(path)
    done = {result["row"] for result in results}
    for row in chosen:
        if row.label in done:
            continue
        result = run_row(row, arguments.budget, corruption, heldout)
        print(f"{result['row']}: {result['steps']} steps, {result['cpu_seconds']} CPU s, "
              f"{result['psnr']} dB, SSIM {result['ssim']}", flush=True)
        results.append(result)
        write(path, results)
    order = {row.label: index for index, row in enumerate(ROWS)}
    results.sort(key=lambda result: order.get(result["row"], len(ROWS)))
    header, rows = table(results + baselines(heldout), heldout[0])
    text = markdown(header, rows, heldout[0], arguments.budget)
    (out / "table.md").write_text(text)
    with (out / "table.csv").open("w", newline="") as file:  # the manual's table (csv-table)
        csv.writer(file, lineterminator="\n").writerows([header, *rows])
    print(text)


if __name__ == "__main__":
    main()
