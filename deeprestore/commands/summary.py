"""`deeprestore summary`: merge the items of a run (all shards of an array job) into one table."""

import os
import shlex

import click


@click.command("summary")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
def command(run):
    """Merge the per-image metrics of a dream, style, invert or denoise apply run into summary.csv and
    summary.json, print the table and list the images still missing, by position."""
    from deeprestore.errors import DeepRestoreError
    from deeprestore.recipes.summary import format_summary, summarise, write_summary
    from deeprestore.rundir import RunDir
    from deeprestore.runlist import find_runs

    if not os.path.isfile(os.path.join(run, "config.json")) and (runs := find_runs(run)):
        raise DeepRestoreError(f"'{run}' is a folder of {len(runs)} run{'s' * (len(runs) != 1)}, not a run directory; "
                               f"expected one of them. `deeprestore runs {shlex.quote(run)}` lists them.")
    opened = RunDir.open(run)
    summary = summarise(opened)
    path = write_summary(opened, summary)
    click.echo(format_summary(summary))
    click.echo(str(path))


command.lazy_backend = True  # reads files only (see `deeprestore.cli`)
