"""Splitting a list of inputs among the tasks of a cluster array job.

`--shard I/N` gives task I (0 <= I < N) the items whose position is I modulo N: every item goes to
exactly one task, whatever the number of items, and tasks get nearly equal shares.
"""

from deeprestore.errors import DeepRestoreError


def parse_shard(text):
    """`"I/N"` to `(I, N)`.

    Raises:
        DeepRestoreError: Not of the form I/N with 0 <= I < N.
    """
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        index, count = -1, 0
    if count < 1 or not 0 <= index < count:
        raise DeepRestoreError(f"Got shard '{text}'; expected I/N with 0 <= I < N, e.g. 0/4 (SLURM_ARRAY_TASK_ID/N).")
    return index, count


def shard(items, text=None):
    """The items of shard `text` (`"I/N"`), in their original order; all items when `text` is None."""
    if text is None:
        return list(items)
    index, count = parse_shard(text)
    return list(items)[index::count]
