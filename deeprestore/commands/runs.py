"""`deeprestore runs [ROOT]`: list the runs under a folder, from their files alone."""

import os

import click


@click.command("runs")
@click.argument("root", required=False, type=click.Path(file_okay=False))
@click.pass_obj
def command(state, root):
    """List the runs under ROOT (default: the --runs folder), oldest first: command, name, status, whether
    a live process owns it, items (or training steps) done of total, and age. Reads files only."""
    from deeprestore.errors import DeepRestoreError
    from deeprestore.runlist import describe, find_runs, format_runs

    root = root or state.runs
    if not os.path.isdir(root):
        raise DeepRestoreError(f"'{root}' is not a folder; expected a folder of runs such as 'runs' or 'runs/dream'.")
    rows = sorted((describe(path) for path in find_runs(root)), key=lambda row: (row["created"], row["path"]))
    click.echo(format_runs(rows, root))


command.lazy_backend = True  # reads files only (see `deeprestore.cli`)
