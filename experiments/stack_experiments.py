"""Issue 4's experiments on learned inversion, each a table of validation MSE/PSNR/SSIM plus figures.

Every training run goes through the `deeprestore stack` command (so each is a run directory that
explains itself); reconstructions from several depths go through `invert_learned`. Tables are written
as Markdown to `<out>/<experiment>.md` and the figures are the runs' own `reconstructions.png`,
`depth.png` and `losses/modules.png`.

- `alexnet-conv1`: AlexNet conv1 inverted by a cd, a dc and a dd module (seed 000, figures 9-11).
- `vgg-pool1-modes`: VGG16 pool1 to image, three modules trained separately and stacked, jointly, and
  end to end (figures 3, 4); `alexnet-pool1-modes`: AlexNet pool1 to image, stacked vs joint (1, 2).
- `vgg-depth`: VGG16 reconstructions from pool1, pool2 and pool3 through 3, 6 and 10 stacked modules
  (figures 5, 6); one separately trained chain from pool3 holds all three.
- `alexnet-lrn`: AlexNet reconstructions from just before (conv1) and just after (norm1) the LRN layer.

Usage: python3 experiments/stack_experiments.py EXPERIMENT [--steps 200] [--size 64] [--out results/stack]
AlexNet has no bundled weights: pass `--alexnet-weights bvlc_alexnet.npy` for the thesis's network
(the default, random weights, only exercises the pipeline).
"""

import argparse
import json
import pathlib
import subprocess
import sys

from deeprestore.datasets import ImageDataset
from deeprestore.images import save_image
from deeprestore.inversion.learned import invert_learned
from deeprestore.rundir import RunDir

# AlexNet sizes whose valid 11x11/4 convolution and 3x3/2 pooling invert exactly: 67 (CPU) or 227.
ALEXNET_SIZE = 67


def stack(options, *arguments):
    """Runs `deeprestore stack` and returns its run directory (the last line it prints)."""
    command = [sys.executable, "-m", "deeprestore", "--runs", str(options.out / "runs"), "--quiet", "stack",
               "--steps", str(options.steps), "--data-cache", str(options.out / "data"), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return pathlib.Path(result.stdout.strip().splitlines()[-1])


def validation_metrics(run):
    return json.loads((run / "metrics.json").read_text())["mean"]


def validation_folder(options, run):
    """Writes the stack run's validation images as PNGs (the images it never trained on)."""
    config = json.loads((run / "config.json").read_text())
    dataset = ImageDataset(config["dataset"]["path"])
    _, indices = dataset.split(config["settings"]["validation"], config["seed"])
    folder = options.out / f"validation-{run.name}"
    for index, image in zip(indices, dataset.images(indices)):
        save_image(folder / f"{index:05d}.png", image)
    return folder


def depth_metrics(options, run):
    """Reconstructions of the run's validation images from every layer along its trained chain."""
    target = RunDir.create(options.out / "runs", "invert", {"method": "learned", "stack": str(run)})
    with target:
        result = invert_learned(run, str(validation_folder(options, run)), target, echo=lambda message: None)
    return target.path, result["by_layer"]


def table(path, title, rows):
    """Writes a Markdown table of `{label: {"mse", "psnr", "ssim", "run"}}` and prints it."""
    lines = [f"# {title}", "", "| variant | MSE | PSNR (dB) | SSIM | run |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {label} | {row['mse']:.5f} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['run']} |"
              for label, row in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def alexnet_conv1(options):
    rows = {}
    for module_type in ("cd", "dc", "dd"):
        run = stack(options, "--network", "alexnet", "--weights", options.alexnet_weights, "--from", "conv1",
                    "--type", module_type, "--size", str(ALEXNET_SIZE))
        rows[module_type] = {**validation_metrics(run), "run": run}
    table(options.out / "alexnet-conv1.md", "AlexNet conv1 to image: module types", rows)


def modes(options, network, extra, name):
    rows = {}
    for mode in ("separate", "joint", "end-to-end"):
        run = stack(options, "--network", network, "--from", "pool1", "--mode", mode, *extra)
        rows[mode] = {**validation_metrics(run), "run": run}
    table(options.out / f"{name}.md", f"{network} pool1 to image: training modes", rows)


def vgg_depth(options):
    run = stack(options, "--from", "pool3", "--size", str(options.size))
    invert_run, by_layer = depth_metrics(options, run)
    rows = {f"from {layer} ({modules} modules)": {**by_layer[layer], "run": invert_run}
            for layer, modules in (("pool1", 3), ("pool2", 6), ("pool3", 10))}
    table(options.out / "vgg-depth.md", "VGG16: reconstruction quality by depth", rows)


def alexnet_lrn(options):
    run = stack(options, "--network", "alexnet", "--weights", options.alexnet_weights, "--from", "norm1",
                "--size", str(ALEXNET_SIZE))
    invert_run, by_layer = depth_metrics(options, run)
    rows = {f"from {layer}": {**by_layer[layer], "run": invert_run} for layer in ("conv1", "norm1")}
    table(options.out / "alexnet-lrn.md", "AlexNet: reconstruction just before and after LRN", rows)


EXPERIMENTS = {
    "alexnet-conv1": alexnet_conv1,
    "vgg-pool1-modes": lambda options: modes(options, "vgg16", ["--size", str(options.size)], "vgg-pool1-modes"),
    "alexnet-pool1-modes": lambda options: modes(
        options, "alexnet", ["--weights", options.alexnet_weights, "--size", str(ALEXNET_SIZE)], "alexnet-pool1-modes"),
    "vgg-depth": vgg_depth,
    "alexnet-lrn": alexnet_lrn,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--steps", type=int, default=200, help="training steps per stack run")
    parser.add_argument("--size", type=int, default=64, help="VGG16 training crop side")
    parser.add_argument("--alexnet-weights", default="random",
                        help="AlexNet weights: a bvlc_alexnet.npy path or random")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/stack"), help="output folder")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    for name in EXPERIMENTS if options.experiment == "all" else [options.experiment]:
        EXPERIMENTS[name](options)


if __name__ == "__main__":
    main()
