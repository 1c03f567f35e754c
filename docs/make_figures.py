"""Makes the manual's figures: each experiment page's worked example, run at CPU scale on bundled data.

Every example is the exact `deeprestore` command line its page shows (`EXAMPLES` below, which the
pages include through `docs/examples/<name>.txt`), run in a temporary runs folder; the figure is the
run's own output, composed beside its inputs where the run writes the result alone. The figures go
to `docs/figures/<name>.png` and are checked in, so building the manual needs no run.

Sizes and steps are small: on two CPU cores, more or less shared with other jobs, each example took
from under a minute to a few (invert at its defaults: 223 s of CPU time); each page states its example's time.
The pages say what the same commands give at full scale. `invert_by_depth` is drawn by its experiment
script (`experiments/invert_by_depth.py`, one `invert` run per image and layer), the longest of all.

Usage: python3 docs/make_figures.py [--only dream --only style ...] [--keep RUNS_FOLDER]
"""

import argparse
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

DOCS = pathlib.Path(__file__).resolve().parent
FIGURES = DOCS / "figures"  # checked-in PNGs, shown by the experiment pages
EXAMPLE_TEXTS = DOCS / "examples"  # the command lines, included verbatim by the pages
PANEL_HEIGHT = 192  # pixels of each image in a side-by-side figure

# One worked example per experiment: its `deeprestore` arguments (after the global options).
EXAMPLES = {
    "dream": "dream --images astronaut --size 192 --octaves 3 --steps 8 --layer block4_conv3",
    "style": "style --content chelsea --style coffee --size 128 --steps 30",
    "texture": "texture --source brick --size 128",
    "invert": "invert --images astronaut --layer block2_conv2 --size 128",
    "stack": "stack --from pool1 --size 48 --steps 120 --validate-every 0",
    "denoise": "denoise train --model unet --corruption gaussian:0.1 --steps 150 --test-size 128",
    "describe": "describe train --patches 16 --steps 8 --triplets 256 --queries 50",
}


def run_command(arguments, runs):
    """Runs `python -m deeprestore` with `arguments` under `runs` and returns the run directory it prints."""
    command = [sys.executable, "-m", "deeprestore", "--runs", str(runs), "--seed", "0", "--quiet",
               *shlex.split(arguments)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=DOCS.parent)
    if completed.returncode != 0:
        raise SystemExit(f"`deeprestore {arguments}` failed:\n{completed.stderr}")
    return pathlib.Path(completed.stdout.strip().splitlines()[-1])


def load(path, height=PANEL_HEIGHT):
    """A PNG or a bundled sample, resized to `height` pixels high."""
    from deeprestore import images

    image = images.load_image(str(path))
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return images.resize(image, (height, width))


def side_by_side(path, panels):
    """Writes the panels (images of one height) in one row with white gaps."""
    from deeprestore import figures

    figures.save_figure(path, figures.image_grid([panels]))


def dream_figure(run, target):
    side_by_side(target, [load(run / "images" / "start.png"), load(run / "dream.png")])


def style_figure(run, target):
    output = next((run / "outputs").glob("*.png"))
    side_by_side(target, [load("chelsea"), load("coffee"), load(output)])


def texture_figure(run, target):
    source = next(run.glob("images/source_*.png"))
    side_by_side(target, [load(source), load(run / "outputs" / "texture_000.png")])


def copy_figure(relative):
    """A figure that is the run's own file, copied as it is."""
    return lambda run, target: shutil.copyfile(run / relative, target)


FIGURE_MAKERS = {
    "dream": dream_figure,
    "style": style_figure,
    "texture": texture_figure,
    "invert": copy_figure("figure.png"),
    "stack": copy_figure("reconstructions.png"),
    "denoise": copy_figure("figure.png"),
    "describe": copy_figure("results.png"),
}


# Figures made by a script in `experiments/` (its table and figure), with its arguments.
EXPERIMENT_FIGURES = {
    "invert_by_depth": ["experiments/invert_by_depth.py", "--out", "results/invert_by_depth"],
}


def run_experiment(name):
    """Runs the experiment script that draws `name`, writing its figure into `docs/figures/`."""
    command = [sys.executable, *EXPERIMENT_FIGURES[name], "--figure", str(FIGURES / f"{name}.png")]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=DOCS.parent)
    if completed.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{completed.stderr}")


def write_example_texts():
    """Writes each example's command line for the pages to include, so page and figure cannot differ."""
    EXAMPLE_TEXTS.mkdir(exist_ok=True)
    for name, arguments in EXAMPLES.items():
        (EXAMPLE_TEXTS / f"{name}.txt").write_text(f"deeprestore {arguments}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted({*EXAMPLES, *EXPERIMENT_FIGURES}),
                        help="Make only these figures.")
    parser.add_argument("--keep", type=pathlib.Path, help="Keep the run directories in this folder.")
    options = parser.parse_args()
    write_example_texts()
    FIGURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        runs = options.keep or pathlib.Path(temporary)
        for name in options.only or [*EXAMPLES, *EXPERIMENT_FIGURES]:
            start = time.perf_counter()
            if name in EXPERIMENT_FIGURES:
                run_experiment(name)
            else:
                run = run_command(EXAMPLES[name], runs)
                FIGURE_MAKERS[name](run, FIGURES / f"{name}.png")
            print(f"{name}: {time.perf_counter() - start:.0f} s -> {FIGURES / f'{name}.png'}", flush=True)


if __name__ == "__main__":
    main()
