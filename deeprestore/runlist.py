"""A folder of runs as a table: each run directory below a root, with its state read from its files.

`find_runs(root)` walks `root` for run directories (folders holding `config.json`; hidden folders, such
as a named run still being built, are skipped), and `describe(path)` reads one run's command, name,
status, owner, progress and age from `config.json`, `status`, `owner.json`, the completion markers and
`checkpoints/state.json`. Nothing here loads a backend, so listing runs takes a fraction of a second.
"""

import datetime
import json
import os
import pathlib

from deeprestore.errors import DeepRestoreError
from deeprestore.rundir import RunDir, owner_state

COLUMNS = ("command", "name", "status", "owner", "done", "age")


def find_runs(root):
    """The run directories below `root` (itself included), sorted by path; a run's own folders are not entered."""
    root = pathlib.Path(root)
    found = []
    for folder, subfolders, files in os.walk(root):
        if "config.json" in files:
            found.append(pathlib.Path(folder))
            subfolders.clear()
        else:
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
    return sorted(found)


def describe(path, now=None):
    """One run's row: `{command, name, status, owner, done, age, path, created}`, all strings.

    `status` is the status's first word (`running`, `complete`, `interrupted`, `failed`, `dead`,
    `incomplete`); `owner` is `alive` (a live process runs it), `dead` (marked running, its process gone) or
    `-` (not running); `done` counts complete items (`3/5`), or trained steps of a training run
    (`20/30 steps`); `age` is the time since the run was created.
    """
    now = now or datetime.datetime.now().astimezone()
    row = {"command": "?", "name": path.name, "status": "?", "owner": "-", "done": "-", "age": "?", "path": str(path),
           "created": ""}
    try:
        run = RunDir.open(path)
    except DeepRestoreError:
        return {**row, "status": "unreadable"}
    config = run.config
    row["command"] = str(config.get("command", "?"))
    status = run.status
    row["status"] = status.split(":")[0].split()[0] if status.strip() else "?"
    row["owner"] = _owner(run)
    row["done"] = _done(run, config)
    row["age"] = _age(config.get("created"), now)
    row["created"] = str(config.get("created", ""))
    return row


def _owner(run):
    """`alive` when a live process runs the run (any task of a named run), `dead` when one is marked
    running but its process is gone, else `-`."""
    tasks = [run.task_path]
    if run.name is not None:
        tasks = sorted(path.parent for path in (run.path / "shards").glob("*/status"))
    states = {owner_state(task) for task in tasks}
    return next((state for state in ("alive", "dead") if state in states), "-")


def _done(run, config):
    items = config.get("items")
    if isinstance(items, list):
        try:
            return f"{len(items) - len(run.missing_items())}/{len(items)}"
        except (OSError, ValueError):
            return "?"
    steps = (config.get("settings") or {}).get("steps") if isinstance(config.get("settings"), dict) else None
    try:
        state = json.loads((run.path / "checkpoints" / "state.json").read_text(encoding="utf-8"))
        trained = int(state["step"])
    except FileNotFoundError:
        trained = 0 if isinstance(steps, int) else None
    except (OSError, ValueError, KeyError, TypeError):
        return "?"
    if trained is None or not isinstance(steps, int):
        return "-"
    return f"{trained}/{steps} steps"


def _age(created, now):
    try:
        seconds = (now - datetime.datetime.fromisoformat(str(created))).total_seconds()
    except (TypeError, ValueError):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def format_runs(rows, root):
    """The rows as a fixed-width table with a header, names relative to `root`; a line when there are none."""
    if not rows:
        return f"No runs under '{root}'."
    root = pathlib.Path(root)
    cells = [[row[column] if column != "name" else _relative(row["path"], root) for column in COLUMNS]
             for row in rows]
    widths = [max(len(line[index]) for line in [list(COLUMNS), *cells]) for index in range(len(COLUMNS))]
    return "\n".join(" ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [list(COLUMNS), *cells])


def _relative(path, root):
    """The run's folder below its command's folder (`job`, `20260101-120000-ab12cd`), or its path from `root`."""
    path = pathlib.Path(path)
    try:
        relative = path.relative_to(root)
    except ValueError:
        return str(path)
    return path.name if len(relative.parts) <= 2 else str(relative)
