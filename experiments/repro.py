"""Reproductions of the seeds' figures and tables, one YAML spec per figure in `experiments/repro/`.

    python3 experiments/repro.py seed003-layers [--scale cpu|full] [--set hpatches=PATH] [--out results/repro]
    python3 experiments/repro.py all            # every reproduction, then results/repro/index.md
    python3 experiments/repro.py --list         # names, titles and where in the seeds they come from

A spec lists the `deeprestore` commands of a reproduction (`runs`: a label, the arguments common to
both scales, and the arguments of each scale) and what its report shows (`report`: a table of values
read from the runs' files, images, curves, and the seed's own numbers and claims). Each reproduction
writes `<out>/<name>/`: `runs/` (the run directories), `logs/` (each command's standard error),
`report.md`, `table.csv`, `figure.png` and `curves-N.png`. A run whose command, arguments and scale
are unchanged and whose directory is complete is reused, so an interrupted `make repro` continues
where it stopped and a report can be re-drawn without recomputing anything.

Arguments may hold placeholders: `{work}` (the reproduction's folder, for data a step writes),
`{run:LABEL}` (the run directory of an earlier run of the same spec), and the variables set with
`--set NAME=VALUE` (weights and data; `VARIABLES` lists them with their defaults). A spec's `full`
arguments may need variables that have no default, such as `{hpatches}`: running it at full scale
without them is an error that names them. Report images are file patterns in the runs' directories,
a list, or one list per scale where the scales' networks name their files differently.
"""

import argparse
import csv
import dataclasses
import datetime
import json
import math
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml
from matplotlib.figure import Figure

import deeprestore
from deeprestore.images import load_image
from deeprestore.rundir import atomic_write, to_json

SPECS = pathlib.Path(__file__).parent / "repro"
SCALES = ("cpu", "full")
# Variables the specs' arguments may use, with their values at each scale (None: must be --set).
VARIABLES = {
    "vgg16": {"cpu": "auto", "full": "imagenet"},      # VGG16 weights (auto: ImageNet if cached, else offline)
    "vgg19": {"cpu": "random", "full": "imagenet"},    # VGG19 weights; none ship offline
    "alexnet": {"cpu": "random", "full": None},        # AlexNet weights: a bvlc_alexnet.npy path
    "classifier": {"cpu": "random", "full": "imagenet"},  # VGG16 with its classifier head (class dreams)
    "images": {"cpu": "bundled", "full": None},        # training images: an ImageNet-sized folder
    "test_images": {"cpu": "camera", "full": None},    # held-out test images of a denoiser: a folder (BSD68)
    "hpatches": {"cpu": None, "full": None},           # an N-HPatches (32x32, _noise twins) folder
    "style": {"cpu": "coffee", "full": None},          # the style image of the style transfer: a painting
}
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)(?::([^}]+))?\}")
_SPEC_KEYS = {"title", "seed", "figures", "claim", "full", "runs", "report"}
_RUN_KEYS = {"label", "args", "cpu", "full", "seed", "show", "images"}
_SHOWN = ("table", "images", "curves")
_REPORT_KEYS = {"table", "images", "curves", "expect"}
_ROWS = {"first": 0, "last": -1}


class ReproError(Exception):
    """A reproduction that cannot run: a malformed spec, a missing variable or a failed command."""


@dataclasses.dataclass
class Result:
    """One finished run of a reproduction."""

    label: str
    argv: list
    path: pathlib.Path
    seconds: float
    seed: dict
    show: tuple
    images: list | None


def spec_names():
    return sorted(path.stem for path in SPECS.glob("*.yaml"))


def load_spec(name):
    """Reads and checks `experiments/repro/<name>.yaml`; every problem is one ReproError line."""
    path = SPECS / f"{name}.yaml"
    if not path.is_file():
        raise ReproError(f"Unknown reproduction '{name}'; expected one of {', '.join(spec_names())}.")
    where = f"{path.name}:"
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:  # a tag such as !!python/object/apply, or broken syntax
        problem = " ".join(str(getattr(error, "problem", None) or error).split())[:160]
        raise ReproError(f"{where} not a plain YAML spec ({problem}); expected mappings, lists, strings and numbers "
                         "only. Nothing was run.") from None
    if not isinstance(spec, dict) or not {"title", "seed", "runs", "report"} <= set(spec):
        raise ReproError(f"{where} expected a mapping with title, seed, runs and report.")
    _check_keys(spec, _SPEC_KEYS, where)
    _check_keys(spec["report"], _REPORT_KEYS, f"{where} report")
    labels = []
    for run in spec["runs"]:
        _check_keys(run, _RUN_KEYS, f"{where} run {run.get('label')!r}")
        if "label" not in run or "args" not in run:
            raise ReproError(f"{where} every run needs a label and args; got {run}.")
        if run["label"] in labels:
            raise ReproError(f"{where} run label {run['label']!r} is used twice; expected unique labels.")
        labels.append(run["label"])
        if not set(run.get("show", _SHOWN)) <= set(_SHOWN):
            raise ReproError(f"{where} run {run['label']!r}: show {run['show']}; expected some of {list(_SHOWN)}.")
        for key in ("args", "cpu", "full"):
            if not all(isinstance(argument, (str, int, float)) for argument in run.get(key, [])):
                raise ReproError(f"{where} run {run['label']!r}: {key} must be a list of plain values.")
    for patterns in [spec["report"].get("images", []), *(run.get("images", []) for run in spec["runs"])]:
        if isinstance(patterns, dict) and not set(patterns) <= set(SCALES):
            raise ReproError(f"{where} images by scale {sorted(patterns)}; expected keys among {list(SCALES)}.")
    for expectation in spec["report"].get("expect", []):
        for side in ("left", "right"):
            if expectation[side] not in labels:
                raise ReproError(f"{where} expect names run {expectation[side]!r}; expected one of {labels}.")
        columns = list(spec["report"].get("table", {}))
        for key in ("column", "right_column"):
            if key in expectation and expectation[key] not in columns:
                raise ReproError(f"{where} expect names column {expectation[key]!r}; expected one of {columns}.")
    return spec


def _check_keys(mapping, allowed, where):
    unknown = set(mapping) - allowed
    if unknown:
        raise ReproError(f"{where} unknown keys {sorted(unknown)}; expected some of {sorted(allowed)}.")


def arguments(run, scale, values, work, done):
    """The command line of `run` at `scale`, placeholders filled in."""
    def fill(match):
        name, label = match.groups()
        if name == "work":
            return str(work)
        if name == "run":
            if label not in done:
                raise ReproError(f"Run {run['label']!r} refers to {{run:{label}}}, which has not run before it.")
            return str(done[label].path)
        if name not in values:
            raise ReproError(f"Unknown placeholder {{{name}}} in run {run['label']!r}; expected one of "
                             f"work, run:LABEL, {', '.join(VARIABLES)}.")
        if values[name] is None:
            raise ReproError(f"Run {run['label']!r} at scale {scale} needs --set {name}=... "
                             f"(make ... {name.upper()}=...); it has no default at this scale.")
        return str(values[name])

    return [_PLACEHOLDER.sub(fill, str(argument)) for argument in [*run["args"], *run.get(scale, [])]]


def execute(name, spec, scale, values, out):
    """Runs (or reuses) every run of a spec; returns `{label: Result}`."""
    work = out / name
    (work / "logs").mkdir(parents=True, exist_ok=True)
    ledger_path = work / "runs.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    done = {}
    for run in spec["runs"]:
        argv = arguments(run, scale, values, work, done)
        previous = ledger.get(run["label"])
        if previous and previous["argv"] == argv and _complete(previous["path"]):
            print(f"[{name}] {run['label']}: reusing {previous['path']}", file=sys.stderr)
            done[run["label"]] = _result(run, argv, previous["path"], previous["seconds"])
            continue
        print(f"[{name}] {run['label']}: deeprestore {shlex.join(argv)}", file=sys.stderr)
        log = work / "logs" / f"{_slug(run['label'])}.log"
        command = [sys.executable, "-m", "deeprestore", "--runs", str(work / "runs"), "--quiet", *argv]
        start = time.perf_counter()
        with log.open("w") as stderr:
            completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, check=False)
        seconds = time.perf_counter() - start
        lines = completed.stdout.strip().splitlines()
        if completed.returncode != 0 or not lines or not pathlib.Path(lines[-1]).is_dir():
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise ReproError(f"{name}: run {run['label']!r} failed with exit code {completed.returncode} "
                             f"({tail[0]}); see {log}.")
        done[run["label"]] = _result(run, argv, lines[-1], seconds)
        ledger[run["label"]] = {"argv": argv, "path": lines[-1], "seconds": seconds}
        atomic_write(ledger_path, to_json(ledger))
    return done


def _result(run, argv, path, seconds):
    return Result(run["label"], argv, pathlib.Path(path), seconds, run.get("seed", {}),
                  tuple(run.get("show", _SHOWN)), run.get("images"))


def shown(results, part):
    """The results that take part in a report's `part` (`table`, `images` or `curves`)."""
    return [result for result in results.values() if part in result.show]


def _complete(path):
    """A recorded run is reusable when it still exists and is complete; commands that write a plain
    folder (such as `describe synth`) have no status file and were complete when they were recorded."""
    path = pathlib.Path(path)
    status = path / "status"
    if not status.is_file():
        return path.is_dir() and not (path / "config.json").is_file()
    return status.read_text().strip() == "complete"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def value(run_path, source):
    """A number from a run: `file.json:dotted.key` (integers index lists, `rows.1.psnr`) or
    `file.csv:column[:first|last|min|max]` (the last row by default)."""
    file, _, key = source.partition(":")
    path = run_path / file
    if not path.is_file():
        raise ReproError(f"{path} does not exist; expected the run to have written it (source {source!r}).")
    if file.endswith(".json"):
        data = json.loads(path.read_text())
        for part in key.split("."):
            if isinstance(data, list) and part.isdigit() and int(part) < len(data):
                data = data[int(part)]
            elif isinstance(data, dict) and part in data:
                data = data[part]
            else:
                raise ReproError(f"{path} has no key {key!r}; expected it for source {source!r}.")
        return float(data)
    column, _, row = key.partition(":")
    values = column_values(path, column)
    if row in ("min", "max"):
        return float(getattr(np, row)(values))
    return float(values[_ROWS[row or "last"]])


def csv_rows(path, column, where=None):
    """The rows of a CSV (dicts) whose columns equal `where`'s; `column` is the one the caller wants."""
    if not pathlib.Path(path).is_file():
        raise ReproError(f"{path} not found; expected a CSV with a column {column!r}.")
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file)
                if all(row.get(key) == str(wanted) for key, wanted in (where or {}).items())]
    if not rows or column not in rows[0]:
        raise ReproError(f"{path} has no rows with a column {column!r} (filter {where}).")
    return rows


def column_values(path, column, where=None):
    """The values of a CSV column as floats, keeping the rows whose columns equal `where`'s."""
    return np.array([float(row[column]) for row in csv_rows(path, column, where)])


def table(spec, results):
    """`(header, rows)`: one row per run, our columns, then the seed's where it gives them."""
    columns = spec["report"].get("table", {})
    seed_columns = [column for column in columns if any(column in result.seed for result in shown(results, "table"))]
    header = ["run", *columns, *(f"seed: {column}" for column in seed_columns)]
    rows = []
    for result in shown(results, "table"):
        ours = [value(result.path, source) for source in columns.values()]
        rows.append([result.label, *ours, *(result.seed.get(column, "") for column in seed_columns)])
    return header, rows


def expectations(spec, header, rows):
    """The seed's claims checked on our numbers: `(claim, verdict, numbers)`, the verdict `agrees` or
    `does not agree`."""
    by_label = {row[0]: row for row in rows}
    checks = []
    for expectation in spec["report"].get("expect", []):
        # `right_column` compares two columns, e.g. a model's PSNR with a baseline's in the same run
        right_column = expectation.get("right_column", expectation["column"])
        left = by_label[expectation["left"]][header.index(expectation["column"])]
        right = by_label[expectation["right"]][header.index(right_column)]
        holds = left > right if expectation["op"] == ">" else left < right
        verdict = "agrees" if holds else "does not agree"
        if right_column == expectation["column"]:
            numbers = f"{expectation['left']} {left:.4g} vs {expectation['right']} {right:.4g}, {right_column}"
        else:
            numbers = f"{expectation['column']} {left:.4g} vs {right_column} {right:.4g}, {expectation['left']}"
        checks.append((expectation["says"], verdict, numbers))
    return checks


def image_patterns(patterns, scale):
    """A spec's image patterns at `scale`: a list, or `{cpu: [...], full: [...]}` where the scales' runs
    name their files differently (VGG16's `block1_pool` at CPU scale, AlexNet's `pool1` at full)."""
    return patterns.get(scale, []) if isinstance(patterns, dict) else patterns


def copy_images(spec, results, folder, scale):
    """Copies each run's report images into `folder`: `[(label, [(file name, caption)])]`, the caption
    the pattern's stem (`block1_pool`) where a run shows several images."""
    copied = []
    for result in shown(results, "images"):
        names = []
        for pattern in image_patterns(result.images or spec["report"].get("images", []), scale):
            matches = sorted(result.path.glob(pattern))
            if not matches:
                raise ReproError(f"Run {result.label!r} ({result.path}) has no file matching {pattern!r}.")
            name = f"{_slug(result.label)}-{_slug(pathlib.PurePath(pattern).stem)}.png"
            shutil.copyfile(matches[-1], folder / name)
            names.append((name, pathlib.PurePath(pattern).stem.strip("*")))
        copied.append((result.label, names))
    return copied


def figure(copied, folder):
    """One PNG with every run's images in a row, labelled, so the report reads at a glance."""
    rows, columns = len(copied), max(len(names) for _, names in copied)
    # One image per run reads best as a row; several per run as one row per run.
    shape = (1, rows) if columns == 1 else (rows, columns)
    plot = Figure(figsize=(3.2 * shape[1], 3.4 * shape[0]))
    for row, (label, names) in enumerate(copied):
        for column, (name, caption) in enumerate(names):
            axes = plot.add_subplot(*shape, row * columns + column + 1)
            image = load_image(folder / name)
            axes.imshow(image, cmap="gray" if image.shape[-1] == 1 else None)
            axes.set_axis_off()
            title = label if len(names) == 1 else f"{label}: {caption}" if column == 0 else caption
            axes.set_title(title, fontsize=9)
    plot.tight_layout()
    plot.savefig(folder / "figure.png", dpi=100)


def curves(spec, results, folder):
    """Draws each `curves` entry (one CSV column from several runs on one plot); returns file names."""
    names = []
    for index, curve in enumerate(spec["report"].get("curves", []), start=1):
        plot = Figure(figsize=(6, 4))
        axes = plot.add_subplot()
        for label in curve.get("runs", [result.label for result in shown(results, "curves")]):
            result = results[label]
            for file in curve["files"]:
                column = curve.get("y", "value")
                rows = csv_rows(result.path / file, column, curve.get("where"))
                values = np.array([float(row[column]) for row in rows])
                steps = _steps(rows)
                suffix = f" ({pathlib.PurePath(file).stem})" if len(curve["files"]) > 1 else ""
                axes.plot(steps, values, label=f"{label}{suffix}")
        axes.set_title(curve["title"])
        axes.set_xlabel(curve.get("xlabel", "iteration"))
        axes.set_ylabel(curve.get("ylabel", curve.get("y", "value")))
        if curve.get("log"):
            axes.set_yscale("log")
        axes.legend(fontsize=8)
        plot.tight_layout()
        name = f"curves-{index}.png"
        plot.savefig(folder / name, dpi=100)
        names.append((curve["title"], name))
    return names


def _steps(rows):
    """The x values of a curve: the CSV's `step` column where it has one that rises row by row
    (validation losses are logged every few steps), else 1, 2, ... (a dream's stages each count
    their own steps)."""
    steps = np.array([float(row["step"]) for row in rows]) if "step" in rows[0] else None
    return steps if steps is not None and np.all(np.diff(steps) > 0) else np.arange(1, len(rows) + 1)


def markdown_table(header, rows):
    def cell(item):
        return f"{item:.4g}" if isinstance(item, float) and math.isfinite(item) else str(item)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(cell(item) for item in row) + " |" for row in rows]


@dataclasses.dataclass
class Written:
    """One reproduction's report, as the index lists it."""

    name: str
    title: str
    origin: str  # the seed and its figures
    path: pathlib.Path
    verdicts: list  # "agrees" or "does not agree" for each of the seed's claims checked
    seconds: float  # the runs' time


def report(name, spec, scale, values, results, out):
    """Writes `report.md`, `table.csv`, `figure.png` and the curves of one reproduction; returns `Written`."""
    folder = out / name
    header, rows = table(spec, results)
    with open(folder / "table.csv", "w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    copied = copy_images(spec, results, folder, scale)
    if any(names for _, names in copied):
        figure(copied, folder)
    drawn = curves(spec, results, folder)
    origin = (f"Seed {spec['seed']}{', ' + spec['figures'] if spec.get('figures') else ''}. "
              f"Scale **{scale}**, made {datetime.date.today()} with deeprestore {deeprestore.__version__} "
              f"by `python3 experiments/repro.py {name} --scale {scale}`.")
    lines = [f"# {spec['title']}", "", origin, ""]
    if spec.get("claim"):
        lines += ["## What the seed shows", "", spec["claim"].strip(), ""]
    lines += ["## Results", ""]
    if len(header) > 1:
        lines += [*markdown_table(header, rows), ""]
    checks = expectations(spec, header, rows)
    for says, verdict, numbers in checks:
        lines.append(f"- Seed: {says}. Ours: {verdict} ({numbers}).")
    lines += [""] if spec["report"].get("expect") else []
    if any(names for _, names in copied):
        lines += ["![figure](figure.png)", ""]
    lines += [f"![{title}]({file})\n" for title, file in drawn]
    lines += ["## Scale", "", _scale_note(spec, scale, values), "", "## Runs", "",
              *markdown_table(["run", "command", "directory", "seconds"],
                              [[result.label, f"`deeprestore {shlex.join(result.argv)}`",
                                f"`{result.path.relative_to(folder)}`", round(result.seconds, 1)]
                               for result in results.values()]), ""]
    atomic_write(folder / "report.md", "\n".join(lines))
    return Written(name, spec["title"], f"{spec['seed']} {spec.get('figures', '')}", folder / "report.md",
                   [verdict for _, verdict, _ in checks],
                   sum(result.seconds for result in results.values()))


def _scale_note(spec, scale, values):
    used = ", ".join(f"{key}={value}" for key, value in values.items() if value is not None)
    if scale == "cpu":
        return (f"CPU scale: small sizes and few steps, bundled images, offline or random weights ({used}). "
                f"To match the seed: {spec.get('full', 'run it with --scale full.').strip()}")
    return f"Full scale (the seed's settings; {used}). {spec.get('full', '').strip()}"


def reproduce(name, scale, settings, out):
    """Runs one reproduction and writes its report; returns its `Written`."""
    spec = load_spec(name)
    values = {key: settings.get(key, defaults[scale]) for key, defaults in VARIABLES.items()}
    results = execute(name, spec, scale, values, out)
    return report(name, spec, scale, values, results, out)


def index(out, written, scale):
    """`index.md`: one line per reproduction report written in this invocation, with how many of the
    seed's claims our numbers agree with, and the runs' minutes."""
    lines = ["# Reproductions", "", f"Scale **{scale}**; the seed's claims are checked in each report.", "",
             "| reproduction | seed | seed's claims | minutes | report |", "| --- | --- | --- | --- | --- |"]
    for item in written:
        agree = item.verdicts.count("agrees")
        claims = f"{agree} of {len(item.verdicts)} agree" if item.verdicts else "shown, not checked"
        lines.append(f"| {item.title} | {item.origin} | {claims} | "
                     f"{item.seconds / 60:.1f} | [{item.name}]({item.path.relative_to(out)}) |")
    total = sum(item.seconds for item in written) / 60
    lines += ["", f"The runs took {total:.0f} minutes in all (reused runs count the time they took when made)."]
    atomic_write(out / "index.md", "\n".join(lines) + "\n")


def parse_settings(pairs):
    settings = {}
    for pair in pairs:
        key, separator, setting = pair.partition("=")
        if not separator or key not in VARIABLES:
            raise ReproError(f"Got --set {pair!r}; expected NAME=VALUE with NAME one of {', '.join(VARIABLES)}.")
        settings[key] = setting
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="reproductions to run, or 'all'")
    parser.add_argument("--scale", choices=SCALES, default="cpu")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help=f"weights or data: {', '.join(VARIABLES)}")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/repro"))
    parser.add_argument("--list", action="store_true", help="list the reproductions and exit")
    options = parser.parse_args(argv)
    try:
        if options.list or not options.names:
            for name in spec_names():
                spec = load_spec(name)
                print(f"{name:28s} seed {spec['seed']} {spec.get('figures', '')}: {spec['title']}")
            return 0
        settings = parse_settings(options.settings)
        names = spec_names() if options.names == ["all"] else options.names
        for name in names:
            load_spec(name)  # every spec checked before hours of work start
        written, failed = [], []
        for name in names:
            try:
                item = reproduce(name, options.scale, settings, options.out)
                written.append(item)
                print(item.path)
            except ReproError as error:
                failed.append(name)
                print(f"Error: {error}", file=sys.stderr)
        if options.names == ["all"] or len(names) > 1:
            index(options.out, written, options.scale)
        if failed:
            print(f"Error: {len(failed)} of {len(names)} reproductions failed: {', '.join(failed)}.", file=sys.stderr)
            return 1
        return 0
    except ReproError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
