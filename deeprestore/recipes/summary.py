"""The summary of a run over a list of images: every completed item's metrics in one table, and the gaps.

Each item of a dream, style, invert or denoise apply run is marked complete with a record holding its
metrics (final loss terms for dream and style, MSE/PSNR/SSIM and feature error for invert, PSNR/SSIM
per method for denoise apply). `summarise` merges the records of every shard that wrote into the run,
in list order, and lists the items without one by position, so a user sees what an array job missed.
"""

import csv
import io
import math

from deeprestore.errors import DeepRestoreError
from deeprestore.rundir import atomic_write, to_json

# Missing items are named one by one up to this many; beyond, only their positions are given.
NAMED_MISSING = 10


def summarise(run):
    """Merges the item records of a run.

    Args:
        run: A `RunDir` whose config lists its `items`.

    Returns:
        `{"run", "command", "status", "items", "complete", "columns", "rows", "mean", "missing"}`: one row
        `{"position", "name", <metric>...}` per completed item in list order, the mean of each metric over
        them, and `{"position", "name"}` of each missing item.

    Raises:
        DeepRestoreError: The run lists no items (not a run over a list of images).
    """
    config = run.config
    if "items" not in config:
        raise DeepRestoreError(f"Run '{run.path}' lists no items; expected a dream, style, invert (optimise) or "
                               "denoise apply run.")
    records = run.item_records()
    rows = [{"position": records[name]["position"], "name": name, **records[name].get("metrics", {})}
            for name in config["items"] if name in records]
    columns = list(dict.fromkeys(key for row in rows for key in row if key not in ("position", "name")))
    mean = {}
    for column in columns:
        values = [row[column] for row in rows
                  if isinstance(row.get(column), (int, float)) and math.isfinite(row[column])]
        mean[column] = sum(values) / len(values) if values else None
    return {"run": str(run.path), "command": config.get("command"), "status": run.status,
            "items": len(config["items"]), "complete": len(rows), "columns": columns, "rows": rows, "mean": mean,
            "missing": [{"position": position, "name": name} for position, name in run.missing_items()]}


def write_summary(run, summary):
    """Writes `summary.csv` (one row per completed item) and `summary.json` into the run; returns the CSV path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["position", "name", *summary["columns"]], lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["rows"])
    atomic_write(run.path / "summary.json", to_json(summary))
    return atomic_write(run.path / "summary.csv", buffer.getvalue())


def format_summary(summary):
    """The summary as a fixed-width table with a mean row, then a line on the missing items."""
    header = ["position", "name", *summary["columns"]]
    lines = [[str(row["position"]), row["name"], *(_number(row.get(column)) for column in summary["columns"])]
             for row in summary["rows"]]
    lines.append(["", "mean", *(_number(summary["mean"][column]) for column in summary["columns"])])
    widths = [max(len(cells[index]) for cells in [header, *lines]) for index in range(len(header))]
    table = [" ".join(cell.rjust(width) if index != 1 else cell.ljust(width)
                      for index, (cell, width) in enumerate(zip(cells, widths))).rstrip()
             for cells in [header, *lines]]
    return "\n".join([*table, _missing_line(summary)])


def _number(value):
    return "" if value is None else f"{value:.4g}"


def _missing_line(summary):
    missing = summary["missing"]
    counts = f"{summary['complete']} of {summary['items']} items complete"
    if not missing:
        return f"{counts}; none missing (status: {summary['status']})."
    if len(missing) <= NAMED_MISSING:
        listed = ", ".join(f"{item['position']} ({item['name']})" for item in missing)
    else:
        listed = "positions " + _ranges([item["position"] for item in missing])
    return f"{counts}; missing {len(missing)}: {listed} (status: {summary['status']})."


def _ranges(positions):
    """`[1, 3, 4, 5, 9]` as `1, 3-5, 9`."""
    spans = []
    for position in positions:
        if spans and position == spans[-1][1] + 1:
            spans[-1][1] = position
        else:
            spans.append([position, position])
    return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in spans)
