"""The sweep that set the `lbfgs` inversion preset: prior weights, L-BFGS's history and the start's noise.

For each layer, image and setting, the `lbfgs` preset's objective (Mahendran & Vedaldi 2016: `C` by
depth, the normalised alpha-norm and TV priors) is minimised with L-BFGS from seeded noise by
`recipes.invert.reconstruct`, and the row records the reconstruction's PSNR and SSIM against the image,
the normalised feature error it reached, and the CPU and wall time. Rows are appended to the CSV as
each run ends, and a row already there is not run again, so an interrupted sweep continues where it
stopped.

    PYTHONPATH=$PWD python experiments/invert_sweep.py --layers block2_conv2 --tv-weights 1 0.1 0.01 \\
        --alpha-weights 0 --steps 300 --out results/invert_sweep.csv

`--priors` prints instead what the 2016 priors (weight 1, normalised per pixel) cost on each image
itself: the scale the feature term `C * error` is balanced against.

    PYTHONPATH=$PWD python experiments/invert_sweep.py --priors --images astronaut chelsea coffee
"""

import argparse
import csv
import dataclasses
import itertools
import pathlib
import time

SETTINGS = ("history", "start_noise", "tv_weight", "alpha_weight")  # swept; with the layer, image, size, steps
FIELDS = ("layer", "band", "image", "size", "steps", *SETTINGS, "feature_weight", "psnr", "ssim", "feature_error",
          "cpu_s", "wall_s")


def row_key(row):
    """What identifies a run: layer, image, size, steps and the swept settings, as numbers."""
    return (row["layer"], row["image"], int(row["size"]), int(row["steps"]), int(row["history"]),
            *(float(row[name]) for name in SETTINGS[1:]))


def print_priors(names, size):
    """Prints each image's alpha-norm and TV prior at weight 1, per pixel, as the objective computes them."""
    from deeprestore import images as image_io
    from deeprestore import objectives
    from deeprestore.networks import create_network
    from deeprestore.optimise import Engine
    from deeprestore.recipes import invert

    network = create_network("vgg16", "random", "max")  # the priors read only the preprocessing
    pixels = size * size
    engine = Engine.for_objective(
        objectives.alpha_norm(6.0, "preprocess", scale=invert.B, pixel_norm=True)
        + objectives.total_variation(2.0, "preprocess", scale=invert.V), network)
    for name in names:
        image = image_io.resize(image_io.load_image(name), (size, size))[None]
        _, values, _ = engine(image)
        print(f"{name}: alpha-norm {values['alpha_norm.preprocess'] / pixels:.3g} per pixel, "
              f"TV {values['tv.preprocess'] / pixels:.3g} per pixel", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["block2_conv2"])
    parser.add_argument("--images", nargs="+", default=["astronaut"])
    parser.add_argument("--tv-weights", nargs="+", type=float, default=[0.1])
    parser.add_argument("--alpha-weights", nargs="+", type=float, default=[0.0])
    parser.add_argument("--histories", nargs="+", type=int, default=[10], help="L-BFGS's correction pairs.")
    parser.add_argument("--start-noises", nargs="+", type=float, default=[0.5],
                        help="Half-widths of the start's uniform noise around mid-grey.")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--weights", default="offline", help="VGG16 weights (offline: the bundled trunk).")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/invert_sweep.csv"))
    parser.add_argument("--priors", action="store_true", help="Print the priors' cost on the images, and stop.")
    options = parser.parse_args()
    if options.priors:
        print_priors(options.images, options.size)
        return

    from deeprestore import images as image_io
    from deeprestore.inversion.metrics import image_metrics
    from deeprestore.networks import create_network
    from deeprestore.probes import FeatureProbe
    from deeprestore.recipes import invert

    network = create_network("vgg16", options.weights, "max")
    print(network.weights.notice, flush=True)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if options.out.exists():
        with options.out.open() as file:
            done = {row_key(row) for row in csv.DictReader(file)}
    new_file = not options.out.exists()
    with options.out.open("a", newline="") as file:
        writer = csv.DictWriter(file, FIELDS)
        if new_file:
            writer.writeheader()
        for layer, name in itertools.product(options.layers, options.images):
            layer = network.resolve(layer)
            image = image_io.resize(image_io.load_image(name), (options.size, options.size))[None]
            features = FeatureProbe(network, (layer,)).features(image)[layer]
            for values in itertools.product(options.histories, options.start_noises, options.tv_weights,
                                            options.alpha_weights):
                setting = dict(zip(SETTINGS, values))
                row = {"layer": layer, "band": invert.depth_band(network, layer), "image": name, "size": options.size,
                       "steps": options.steps, **setting}
                if row_key(row) in done:
                    continue
                chosen = dataclasses.replace(invert.preset("lbfgs", network, layer), steps=options.steps, **setting)
                start = invert.noise_starts(0, [(0, name, name)], image.shape, chosen.start_noise)
                cpu, wall = time.process_time(), time.perf_counter()
                result, engine = invert.reconstruct(network, layer, chosen, features, start)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                _, terms, _ = engine(result, {f"feature.{layer}": features})
                metrics = image_metrics(image[0], result[0])
                row.update(feature_weight=chosen.feature_weight, psnr=round(metrics["psnr"], 3),
                           ssim=round(metrics["ssim"], 4), feature_error=f"{terms[f'feature.{layer}']:.5g}",
                           cpu_s=round(cpu, 1), wall_s=round(wall, 1))
                writer.writerow(row)
                file.flush()
                print(row, flush=True)


if __name__ == "__main__":
    main()
