"""`deeprestore summary`: merge the items of a run (all shards of an array job) into one table."""

import click


@click.command("summary")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
def command(run):
    """Merge the per-image metrics of a dream, style, invert or denoise apply run into summary.csv and
    summary.json, print the table and list the images still missing, by position."""
    from deeprestore.recipes.summary import format_summary, summarise, write_summary
    from deeprestore.rundir import RunDir

    opened = RunDir.open(run)
    summary = summarise(opened)
    path = write_summary(opened, summary)
    click.echo(format_summary(summary))
    click.echo(str(path))
