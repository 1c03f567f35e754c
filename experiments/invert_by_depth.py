"""Mahendran & Vedaldi's reconstruction-by-depth figure and table for VGG16, by the `invert` command at
its defaults.

For each image and layer (by default the last ReLU of every block), runs

    deeprestore --seed 0 --quiet invert --weights offline --images IMAGE --layer LAYER --size 128

and records, from the run's `metrics.json`, the reconstruction's PSNR and SSIM against the image and
the normalised feature error `||phi(x) - phi0||^2 / ||phi0||^2` it reached (small: the optimiser reached
the layer's activations, so what the reconstruction lacks is what the layer does not keep), with the
run's CPU and wall time. Rows go to `<out>/by_depth.csv` as each run ends; a row already there is not
run again. At the end it writes `<out>/by_depth.json` and the figure `<out>/by_depth.png` (per image:
the image, then the reconstruction from each layer, white where a run is missing).

    PYTHONPATH=$PWD python experiments/invert_by_depth.py --out results/invert_by_depth \\
        --figure docs/figures/invert_by_depth.png
"""

import argparse
import csv
import json
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the checkout whose `deeprestore` runs
LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
FIELDS = ("image", "layer", "size", "preset", "steps", "psnr", "ssim", "feature_error", "cpu_s", "wall_s", "run")


def child_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_invert(arguments, runs):
    """Runs `python -m deeprestore invert ...` under `runs`; returns its run directory and CPU and wall seconds."""
    command = [sys.executable, "-m", "deeprestore", "--runs", str(runs), "--seed", "0", "--quiet", "invert",
               *arguments]
    cpu, wall = child_cpu_seconds(), time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if completed.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{completed.stderr}")
    run = (ROOT / completed.stdout.strip().splitlines()[-1]).resolve()
    return run, child_cpu_seconds() - cpu, time.perf_counter() - wall


def read_rows(path):
    if not path.exists():
        return []
    with path.open() as file:
        return list(csv.DictReader(file))


def figure(rows, images, layers, size, path):
    """Per image a row: the image, then its reconstruction from each layer (white where a run is missing)."""
    import numpy as np

    from deeprestore import figures
    from deeprestore import images as image_io

    found = {(row["image"], row["layer"]): row for row in rows}
    cells = []
    for name in images:
        cells.append([image_io.resize(image_io.load_image(name), (size, size))] + [
            image_io.load_image(str(pathlib.Path(found[name, layer]["run"]) / "outputs" / f"000_{name}.png"))
            if (name, layer) in found else np.ones((size, size, 3), np.float32) for layer in layers])
    titles = ["image", *layers]  # the PSNR of each cell is in the table
    figures.save_figure(path, figures.image_grid(cells, column_titles=titles, row_titles=list(images),
                                                 title=f"VGG16 (offline weights) reconstructions by depth, "
                                                       f"invert's defaults at {size} px"))


def main():
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["astronaut", "chelsea"])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--weights", default="offline", help="VGG16 weights (offline: the bundled trunk).")
    parser.add_argument("--extra", default="", help="More `invert` options, e.g. '--preset mv2016 --steps 300'.")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/invert_by_depth"))
    parser.add_argument("--figure", type=pathlib.Path, help="Also write the figure here (the manual's).")
    options = parser.parse_args()
    options.out = options.out.resolve()
    options.out.mkdir(parents=True, exist_ok=True)
    table = options.out / "by_depth.csv"
    rows = read_rows(table)
    extra = options.extra.split()
    new_file = not table.exists()
    with table.open("a", newline="") as file:
        writer = csv.DictWriter(file, FIELDS)
        if new_file:
            writer.writeheader()
        for layer in options.layers:
            for name in options.images:
                if any(row["image"] == name and row["layer"] == layer for row in rows):
                    continue
                run, cpu, wall = run_invert(["--weights", options.weights, "--images", name, "--layer", layer,
                                             "--size", str(options.size), *extra], options.out / "runs")
                metrics = json.loads((run / "metrics.json").read_text())
                config = json.loads((run / "config.json").read_text())
                preset = config.get("settings", config).get("preset")
                row = {"image": name, "layer": layer, "size": options.size, "preset": preset,
                       "steps": config.get("preset", {}).get("steps"), "psnr": round(metrics["mean"]["psnr"], 2),
                       "ssim": round(metrics["mean"]["ssim"], 3), "feature_error": f"{metrics['feature_error']:.4f}",
                       "cpu_s": round(cpu), "wall_s": round(wall), "run": str(run)}
                writer.writerow(row)
                file.flush()
                rows.append({key: str(value) for key, value in row.items()})
                print(row, flush=True)
    (options.out / "by_depth.json").write_text(json.dumps(rows, indent=1))
    # The figure shows every image and layer measured so far in this folder, not only this call's.
    shown_images = list(dict.fromkeys([*options.images, *(row["image"] for row in rows)]))
    shown_layers = [layer for layer in LAYERS if any(row["layer"] == layer for row in rows)]
    shown_layers += [layer for layer in dict.fromkeys(row["layer"] for row in rows) if layer not in shown_layers]
    for path in filter(None, (options.out / "by_depth.png", options.figure)):
        figure(rows, shown_images, shown_layers, options.size, path)
        print(f"figure -> {path}")


if __name__ == "__main__":
    main()
