"""`describe evaluate`: score descriptors on an HPatches-format dataset with the benchmark's protocol.

Descriptor CSV folders, built-in baselines (`raw16`, `sift`) and a trained descriptor are scored on the
same task lists and reported side by side. Only a trained descriptor needs Keras: this module imports
it (through `deeprestore.recipes.describe`) only then, so scoring CSV files starts in a second rather
than in the backend's start-up time. The dataset, task and results helpers it shares with `describe
train` are in `recipes.describe_data`.
"""

import contextlib
import importlib
import pathlib
import threading

from deeprestore.descriptors import evaluation, export, hpatches
from deeprestore.errors import DeepRestoreError
from deeprestore.recipes.describe_data import prepare_dataset, prepare_tasks, save_results, split_name


def _import_quietly(name):
    with contextlib.suppress(ImportError):  # the plot raises it where it is needed
        importlib.import_module(name)


def _unique(name, taken):
    return name if name not in taken else f"{name}-{len(taken)}"


def evaluate(settings, run, seed=0, echo=print):
    """Scores a trained descriptor, baselines and/or CSV descriptor folders on the split, side by side.

    Returns:
        `{name: results}`.
    """
    baselines = tuple(getattr(settings, "baselines", ()))
    if settings.model is None and not settings.descriptors and not baselines:
        raise DeepRestoreError("Nothing to evaluate; expected --model RUN_OR_FILE, --descriptors FOLDER and/or "
                               "--baseline NAME.")
    # The results plot's library takes about a second to import: import it beside the reading and scoring.
    threading.Thread(target=_import_quietly, args=("matplotlib.figure",), name="import-matplotlib").start()
    descriptor = None
    if settings.model is not None:  # a file that is not a model is refused before the dataset is prepared
        from deeprestore.recipes import describe as training  # imports Keras

        descriptor = training.load_descriptor(settings.model)
    root = prepare_dataset(settings, run, seed)
    split = hpatches.resolve_split(root, split_name(settings), settings.tasks)
    needs_patches = settings.model is not None or bool(baselines)
    names = hpatches.sequence_names(root) if settings.export and settings.model else list(split.test)
    dataset = hpatches.load_dataset(root, names, noisy=settings.inputs != "clean") if needs_patches else None
    task_lists = prepare_tasks(settings, root, split, dataset, run, seed)
    counts = ({name: dataset[name].count for name in split.test} if dataset is not None
              else hpatches.patch_counts(root, split.test))
    results_by_name = {}
    if descriptor is not None:
        source = training.PatchSource(settings.inputs, settings.denoiser)
        described = training.describe_dataset(descriptor, dataset, names, source)
        if settings.export:
            export.save_descriptors(run.path / "descriptors" / "descriptor", described)
        results_by_name["descriptor"] = evaluation.evaluate(described, task_lists, split.test)
    for baseline in baselines:
        described = describe_with_baseline(baseline, dataset, split.test, settings.inputs)
        results_by_name[_unique(baseline, results_by_name)] = evaluation.evaluate(described, task_lists, split.test)
    for folder in settings.descriptors:
        loaded = export.load_descriptors(folder, split.test, counts, getattr(settings, "delimiter", None))
        results_by_name[_unique(pathlib.Path(folder).name, results_by_name)] = evaluation.evaluate(
            loaded, task_lists, split.test)
    echo(save_results(run, results_by_name).rstrip())
    return results_by_name


def describe_with_baseline(name, dataset, names, inputs="clean"):
    """`{sequence: {image: descriptors}}` of a built-in baseline (see `baselines.BASELINES`) on the
    clean patches, or the `_noise` twins for other inputs (baselines see no denoiser)."""
    from deeprestore.descriptors import baselines

    function = baselines.BASELINES[name]
    described = {}
    for sequence in names:
        stacks = dataset[sequence].images if inputs == "clean" else dataset[sequence].noisy
        if stacks is None:
            raise DeepRestoreError(f"Sequence '{sequence}' has no '_noise' twins; expected them for inputs "
                                   f"'{inputs}', or --inputs clean.")
        described[sequence] = {image: function(stacks[image]) for image in hpatches.IMAGES}
    return described
