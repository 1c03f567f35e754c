"""A shared `--cache` under an array job: many processes at once, and writers killed at any moment.

The workers are separate Python processes that use the cache and run folder the way a recipe does,
with a numpy stand-in for the network, so eight of them start in about a second.
"""

import hashlib
import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from deeprestore.cache import ActivationCache, group_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEYS = [f"style:image{number}.png@32x32" for number in range(6)]
LAYERS = ("relu1", "relu2", "relu3")
METADATA = {"network": "stand-in", "weights_sha256": "0" * 64, "preprocessing": "none"}

# A worker: joins the named run as task I of N, asks the cache for every key with a layer subset that
# depends on its index (so entries grow by layers across processes), checks each answer against the
# stand-in, marks its items complete. With several indices it does their work one after the other.
WORKER = """
import json, sys
import numpy as np
from deeprestore.cache import ActivationCache
from deeprestore.rundir import RunDir
sys.path.insert(0, {tests!r})
from test_cache_sharing import KEYS, LAYERS, METADATA, image, stand_in
runs, cache_path, count, indices = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
for index in indices:
    config = {{"settings": {{"cache": cache_path}}, "seed": 0, "items": [f"{{i:03d}}_item" for i in range(count)]}}
    with RunDir.join(runs, "style", "shared", config, shard=f"{{index}}/{{count}}", argv=["worker"]) as run:
        cache = ActivationCache(cache_path)
        for turn in range(len(KEYS)):
            key = KEYS[(index + turn) % len(KEYS)]
            layers = LAYERS[:1 + (index + turn) % len(LAYERS)]
            got = cache.get_or_compute(key, image(key), layers, stand_in, **METADATA)
            want = stand_in(image(key)[None], layers)
            assert all(np.array_equal(got[layer], want[layer][0]) for layer in layers), key
        run.complete_item(f"{{index:03d}}_item", {{"position": index}})
"""


def image(key):
    """A distinct, reproducible image per key."""
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).random((32, 32, 3), dtype=np.float32)


def stand_in(images, layers):
    """The 'network': one deterministic array per layer, large enough that writes take a while."""
    return {layer: np.tile(images * (number + 1), (1, 2, 2, 8 * (number + 1)))
            for number, layer in enumerate(LAYERS) if layer in layers}


def start_worker(runs, cache_path, count, indices):
    script = WORKER.format(tests=str(ROOT / "tests"))
    return subprocess.Popen([sys.executable, "-c", script, str(runs), str(cache_path), str(count), json.dumps(indices)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def entries(cache_path):
    """`{key: {layer: array}}` of every complete entry, read with plain h5py."""
    keys = ActivationCache(cache_path).keys()
    with h5py.File(cache_path, "r") as file:
        return {key: {layer: file[group_name(key)][layer][()] for layer in file[group_name(key)]} for key in keys}


def test_eight_processes_share_one_cache_and_one_runs_folder_and_agree_with_one_process(tmp_path):
    workers = [start_worker(tmp_path / "runs", tmp_path / "shared.h5", 8, [index]) for index in range(8)]
    results = [worker.communicate(timeout=300) for worker in workers]

    assert [worker.returncode for worker in workers] == [0] * 8, [error[-500:] for _, error in results]
    alone = start_worker(tmp_path / "alone-runs", tmp_path / "alone.h5", 8, list(range(8)))
    assert alone.wait(timeout=300) == 0, alone.communicate()[1][-500:]
    shared, reference = entries(tmp_path / "shared.h5"), entries(tmp_path / "alone.h5")
    assert sorted(shared) == sorted(reference) == sorted(KEYS)
    for key in KEYS:
        assert shared[key].keys() == reference[key].keys()
        assert all(np.array_equal(shared[key][layer], reference[key][layer]) for layer in reference[key])
    run = tmp_path / "runs" / "style" / "shared"
    assert len(list((run / "complete").iterdir())) == 8
    assert {path.read_text().strip() for path in run.glob("shards/*/status")} == {"complete"}
    assert not list(tmp_path.glob(".shared.h5.*.tmp"))


KILLER = """
import sys
import numpy as np
from deeprestore.cache import ActivationCache
sys.path.insert(0, {tests!r})
from test_cache_sharing import LAYERS, METADATA, image, stand_in
cache = ActivationCache(sys.argv[1])
print("ready", flush=True)
for number in range(10**6):
    key = f"grow{{number}}"
    cache.get_or_compute(key, image(key), LAYERS, stand_in, **METADATA)
"""


def test_a_writer_killed_at_random_moments_leaves_a_readable_cache_of_whole_entries(tmp_path):
    path = tmp_path / "cache.h5"
    moments = random.Random(0)
    kills = 0
    for _ in range(12):
        writer = subprocess.Popen([sys.executable, "-c", KILLER.format(tests=str(ROOT / "tests")), str(path)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready", writer.communicate()[1][-500:]
        time.sleep(moments.uniform(0.0, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        kills += writer.returncode == -signal.SIGKILL
        if not path.exists():
            continue
        assert h5py.is_hdf5(path)
        cache = ActivationCache(path)
        for key in cache.keys():  # noqa: SIM118 (the cache's method). Every complete entry is whole and exact
            assert cache.contains(key, LAYERS[-1], image=image(key), **METADATA)
            got = cache.get_or_compute(key, image(key), LAYERS, pytest.fail, **METADATA)
            want = stand_in(image(key)[None], LAYERS)
            assert all(np.array_equal(got[layer], want[layer][0]) for layer in LAYERS)
    assert kills == 12 and len(ActivationCache(path).keys()) > 0


PAUSER = """
import sys, time
from deeprestore.cache import ActivationCache
sys.path.insert(0, {tests!r})
from test_cache_sharing import LAYERS, METADATA, image, stand_in
cache = ActivationCache(sys.argv[1])
cache.get_or_compute("before", image("before"), LAYERS, stand_in, **METADATA)
print("ready", flush=True)
sys.stdin.readline()
write = ActivationCache._write
def write_then_pause(self, *arguments):
    write(self, *arguments)
    print("writing", flush=True)
    time.sleep(600)
ActivationCache._write = write_then_pause
cache.get_or_compute("during", image("during"), LAYERS, stand_in, **METADATA)
"""


def test_a_writer_killed_in_the_middle_of_a_write_leaves_the_file_byte_for_byte_as_before(tmp_path):
    path = tmp_path / "cache.h5"
    writer = subprocess.Popen([sys.executable, "-c", PAUSER.format(tests=str(ROOT / "tests")), str(path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready", writer.communicate()[1][-500:]
    before = path.read_bytes()
    writer.stdin.write("go\n")
    writer.stdin.flush()
    assert writer.stdout.readline().strip() == "writing", writer.communicate()[1][-500:]

    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)

    assert path.read_bytes() == before and ActivationCache(path).keys() == ["before"]
    ActivationCache(path).get_or_compute("after", image("after"), LAYERS, stand_in, **METADATA)
    assert ActivationCache(path).keys() == ["after", "before"] and not list(tmp_path.glob(".cache.h5.*.tmp"))
