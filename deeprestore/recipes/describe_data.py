"""What `describe train` and `describe evaluate` share: the dataset folder (given, or synthesised into
the run), the split's task lists (read, or generated into the run) and the results files.
"""

import pathlib

from deeprestore.descriptors import evaluation, hpatches, tasks


def split_name(settings):
    """`--split`, or its default: `heldout` on the synthetic data (train on every bundled photo, test on
    the held-out photos), `a` on a dataset folder."""
    return settings.split or ("heldout" if settings.data is None else "a")


def prepare_dataset(settings, run, seed):
    """The dataset folder: `settings.data`, or the synthetic dataset generated into `<run>/data`, with
    the held-out photos' sequences (as `describe synth --heldout` draws them) for the split `heldout`."""
    if settings.data is not None:
        return pathlib.Path(settings.data)
    import dataclasses

    from deeprestore.descriptors import synthetic

    spec = synthetic.SyntheticSpec(count=settings.patches, seed=seed)
    heldout = None
    if split_name(settings) == "heldout":
        heldout = dataclasses.replace(synthetic.HELDOUT, seed=synthetic.HELDOUT.seed + seed)
    return synthetic.synthesize(run.path / "data", spec, heldout)


def prepare_tasks(settings, root, split, dataset, run, seed):
    """The split's tasks: from `settings.tasks` or `<data>/tasks`, else generated into `<run>/tasks`
    (also when `settings.tasks` holds other splits' files only, as the benchmark's task folder does for
    a split it does not know; a folder with some but not all of the split's files is an error).

    Args:
        dataset: `{name: Sequence}` holding at least the test sequences, or `None`: then the patch
            counts come from the PNG headers, and `ref` stacks are read only to generate tasks.
    """
    if dataset is None:
        counts = hpatches.patch_counts(root, split.test)
    else:
        counts = {name: dataset[name].count for name in split.test}
    for folder in ([settings.tasks] if settings.tasks else []) + [root / "tasks"]:
        partial = folder == settings.tasks and any(pathlib.Path(folder).glob(f"*_split-{split.name}.csv"))
        if tasks.has_tasks(folder, split.name) or partial:
            return tasks.read_tasks(folder, split.name, counts)

    def reference(name):
        return dataset[name].images["ref"] if dataset is not None else hpatches.read_stack(root / name / "ref.png")

    patch_std = {name: reference(name).reshape(counts[name], -1).std(axis=1) for name in split.test}
    generated = tasks.generate_tasks(split, counts, patch_std, seed=seed, pairs=settings.pairs,
                                     queries=settings.queries, distractors=settings.distractors)
    tasks.write_tasks(run.path / "tasks", generated)
    return generated


def save_results(run, results_by_name):
    """Writes `results.json` (every entry), `results.txt` (the tables, per sequence too) and
    `results.png`; returns the text to print: each descriptor's tables and, for several, one
    comparison table."""
    run.save_json("results.json", results_by_name)
    text = "".join(evaluation.format_table(results, name, per_sequence=True) + "\n"
                   for name, results in results_by_name.items())
    printed = "".join(evaluation.format_table(results, name) + "\n" for name, results in results_by_name.items())
    if len(results_by_name) > 1:
        comparison = "Summary, mAP and success rate in %\n" + evaluation.format_comparison(results_by_name)
        text, printed = text + comparison, printed + comparison
    (run.path / "results.txt").write_text(text, encoding="utf-8")
    evaluation.plot_results(run.path / "results.png", results_by_name)
    return printed
