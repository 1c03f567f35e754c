"""One training over several processes (`deeprestore.distributed`), proved on this machine: two
processes on localhost (coordinator 127.0.0.1), each with two virtual CPU devices, against one
process with four devices.

The cheap test trains a small dense model through `training.train` (the path stack, denoise train and
describe train share): two processes end with the weights of one process on four devices, to float
tolerance (the all-reduce of gloo between processes sums the per-device gradients in another order
than XLA within one process, so the last bits differ; see the test for the figures); a SIGTERM to one
of them stops both after the same step with one checkpoint, and resuming both from it ends bit for
bit where the uninterrupted pair ended.

On TensorFlow (a `MultiWorkerMirroredStrategy` of two workers on 127.0.0.1, each with two logical CPU
devices, trained by `backend._multi_worker_fit` since Keras's `fit` fails under it) the same script runs
in two processes against one process of four devices (`MirroredStrategy`), with the same checks: the pair
ends 6e-8 from the single process (the tolerance 1e-5 as on JAX: the ring all-reduce between the processes
adds the four devices' gradients in another order than one process does, so only the last bits of float32
differ), and the stop and resume are bit for bit.

`DEEPRESTORE_MULTIPROCESS_KILLS=N` adds the slow proof through the command line (`stack --name`), on
each backend: the pair against one process (of four devices on JAX, one on TensorFlow), then N times
kill -9 of one process of the pair after a random step, each followed by the same command in both
processes, until the run ends equal, bit for bit, to the uninterrupted pair. Every process of a JAX job
needs the `jax` extra and gloo (in jaxlib).
"""

import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from deeprestore import distributed
from deeprestore.errors import DeepRestoreError

ROOT = pathlib.Path(__file__).parents[1]
KILLS = int(os.environ.get("DEEPRESTORE_MULTIPROCESS_KILLS", "0"))
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")


def test_the_environment_describes_the_job():
    explicit = {"DEEPRESTORE_COORDINATOR": "10.0.0.1:61000", "DEEPRESTORE_PROCESSES": "4",
                "DEEPRESTORE_PROCESS_ID": "3"}
    assert distributed.cluster_from_environment(explicit) == distributed.Cluster(4, 3, ("10.0.0.1:61000",),
                                                                                 "environment")
    assert distributed.cluster_from_environment({}) is None
    assert distributed.cluster_from_environment({**explicit, "DEEPRESTORE_PROCESSES": "1",
                                                 "DEEPRESTORE_PROCESS_ID": "0"}) is None
    slurm = {"SLURM_JOB_ID": "4097", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "SLURM_PROCID": "2",
             "SLURM_STEP_NODELIST": "gpu[07-10],login1"}
    assert distributed.cluster_from_environment(slurm) == distributed.Cluster(4, 2, ("gpu07:61441",), "slurm")
    assert distributed.cluster_from_environment({**slurm, "SLURM_NTASKS": "1"}) is None  # one task: one process
    assert distributed.cluster_from_environment({k: v for k, v in slurm.items() if k != "SLURM_STEP_ID"}) is None
    assert distributed.first_host("node7,gpu[1-2]") == "node7" and distributed.first_host("n[3,5]") == "n3"


@pytest.mark.parametrize(("environment", "message"), [
    ({"DEEPRESTORE_PROCESSES": "2"}, "but not DEEPRESTORE_COORDINATOR, DEEPRESTORE_PROCESS_ID"),
    ({"DEEPRESTORE_COORDINATOR": "h:1", "DEEPRESTORE_PROCESSES": "2", "DEEPRESTORE_PROCESS_ID": "2"}, "not below"),
    ({"DEEPRESTORE_COORDINATOR": "h:1", "DEEPRESTORE_PROCESSES": "two", "DEEPRESTORE_PROCESS_ID": "0"},
     "DEEPRESTORE_PROCESSES='two' is not a whole number"),
    ({"DEEPRESTORE_COORDINATOR": "host", "DEEPRESTORE_PROCESSES": "2", "DEEPRESTORE_PROCESS_ID": "0"}, "host:port"),
])
def test_a_bad_description_is_one_line(environment, message):
    with pytest.raises(DeepRestoreError, match=message):
        distributed.cluster_from_environment(environment)
    assert distributed.described(environment)


def test_tensorflow_workers_are_those_of_the_description(monkeypatch):
    explicit = distributed.Cluster(2, 1, ("10.0.0.1:61000", "10.0.0.2:61001"), "environment")
    resolver = distributed.tensorflow_resolver(explicit)
    assert resolver.cluster_spec().as_dict() == {"worker": ["10.0.0.1:61000", "10.0.0.2:61001"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    with pytest.raises(DeepRestoreError, match="names 1 of the 2 processes; on TensorFlow expected every"):
        distributed.tensorflow_resolver(distributed.Cluster(2, 0, ("10.0.0.1:61000",), "environment"))
    slurm = {"SLURM_JOB_ID": "4097", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1",
             "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    for variable, value in slurm.items():
        monkeypatch.setenv(variable, value)
    cluster = distributed.cluster_from_environment()
    resolver = distributed.tensorflow_resolver(cluster)
    assert resolver.cluster_spec().as_dict() == {"worker": ["gpu07:61441", "gpu08:61441"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu07")  # two tasks on one node
    with pytest.raises(DeepRestoreError, match="expected one task per node"):
        distributed.tensorflow_resolver(cluster)


# Run by each process, on one model (compiled once): "straight" trains 4 steps, keeping the checkpoint of step 2;
# in the pair, "stopped" continues a copy of that checkpoint, process 1 sending itself SIGTERM during step 3,
# and "resumed" continues what the stop left to step 4.
TRAIN_SCRIPT = """
import json, os, pathlib, shutil, signal, sys
if os.environ["KERAS_BACKEND"] == "tensorflow":  # logical CPU devices, as XLA_FLAGS splits the CPU for JAX
    import tensorflow as tf
    devices = [tf.config.LogicalDeviceConfiguration()] * int(os.environ["CPU_DEVICES"])
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], devices)
from deeprestore import distributed
distributed.initialize()
import keras, numpy as np
from deeprestore import training
from deeprestore.backend import DataParallel

folder = pathlib.Path(sys.argv[1])
parallel = DataParallel("all")
with parallel.scope():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8, activation="relu")(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
initial = model.get_weights()

def batches(step):
    rng = np.random.default_rng(step)
    inputs = rng.normal(size=(8, 6)).astype("float32")
    return inputs, np.stack([inputs[:, 0] - inputs[:, 1], inputs[:, 2] * 0.5], axis=1)

class Terminate(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if distributed.process_index() == 1:
            os.kill(os.getpid(), signal.SIGTERM)

def train(name, resume=False, callbacks=()):
    training.train(model, batches, training.Schedule(steps=4, checkpoint_every=2, keep_every=2),
                   training.Storage(folder / name / "checkpoints", folder / name / "losses", resume),
                   validation=lambda: [batches(100)], parallel=parallel, callbacks=callbacks)

train("straight")
result = {"devices": len(parallel.devices), "processes": parallel.processes, "initial": initial[0].tolist(),
          "slice": len(parallel.process_batches(batches)(0)[0])}
if sys.argv[2] == "pair":
    if distributed.is_primary():
        (folder / "stopped" / "checkpoints").mkdir(parents=True)
        shutil.copy(folder / "straight" / "checkpoints" / "step-00000002.weights.h5",
                    folder / "stopped" / "checkpoints")
        training.atomic_write(folder / "stopped" / "checkpoints" / "state.json",
                              json.dumps({"step": 2, "file": "step-00000002.weights.h5"}))
    distributed.barrier("copied")
    try:
        train("stopped", resume=True, callbacks=[Terminate()])
    except training.Interrupted as error:
        result["interrupted"] = str(error)
    train("stopped", resume=True)
print(json.dumps(result))
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jax_environment(devices, **variables):
    return {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **variables}


def pair_environment(port, index):
    return jax_environment(2, DEEPRESTORE_COORDINATOR=f"127.0.0.1:{port}", DEEPRESTORE_PROCESSES="2",
                           DEEPRESTORE_PROCESS_ID=str(index))


def last_checkpoint(folder):
    """`(step, {key: array})` of the last checkpoint in `folder`."""
    state = json.loads((folder / "state.json").read_text())
    values = {}
    with h5py.File(folder / state["file"], "r") as file:
        file.visititems(lambda key, item: values.update({key: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return state["step"], values


def largest_difference(first, second):
    assert first.keys() == second.keys()
    return max(float(np.abs(first[key] - second[key]).max()) for key in first)


def tensorflow_environment(devices=1, **variables):
    return {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2", "CPU_DEVICES": str(devices), **variables}


def tensorflow_pair_environment(ports, index, devices=1):
    return tensorflow_environment(devices, DEEPRESTORE_COORDINATOR=",".join(f"127.0.0.1:{port}" for port in ports),
                                  DEEPRESTORE_PROCESSES="2", DEEPRESTORE_PROCESS_ID=str(index))


def environments(engine):
    """`([process 0's, process 1's], the single process's)` environments: two processes of two CPU devices
    each on localhost, against one process of four."""
    if engine == "jax":
        port = free_port()
        return [pair_environment(port, index) for index in (0, 1)], jax_environment(4)
    ports = [free_port(), free_port()]
    return [tensorflow_pair_environment(ports, index, devices=2) for index in (0, 1)], tensorflow_environment(4)


@pytest.mark.parametrize("engine", [pytest.param("jax", marks=needs_jax), "tensorflow"])
def test_two_processes_of_two_devices_train_as_one_process_of_four(tmp_path, engine):
    pair_environments, single_environment = environments(engine)
    command = [sys.executable, "-c", TRAIN_SCRIPT]
    pair = [subprocess.Popen([*command, str(tmp_path / "pair"), "pair"], env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for environment in pair_environments]
    single = subprocess.run([*command, str(tmp_path / "single"), "single"], env=single_environment,
                            capture_output=True, text=True, timeout=300, check=False)
    outputs = [process.communicate(timeout=300) for process in pair]
    for process, (_, errors) in zip(pair, outputs):
        assert process.returncode == 0, errors[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]
    first, second = (json.loads(output.strip().splitlines()[-1]) for output, _ in outputs)
    assert first["devices"] == second["devices"] == 4 and first["processes"] == 2
    assert first["slice"] == second["slice"] == 4  # each process reads its half of the batch of 8
    assert json.loads(single.stdout.strip().splitlines()[-1])["slice"] == 8
    # SIGTERM to process 1 in step 3 stopped both after step 3, process 0 writing the one checkpoint
    assert "at step 3" in first["interrupted"] and "another process" in first["interrupted"]
    assert "at step 3" in second["interrupted"] and "SIGTERM" in second["interrupted"]

    step, pair_values = last_checkpoint(tmp_path / "pair" / "straight" / "checkpoints")
    single_step, single_values = last_checkpoint(tmp_path / "single" / "straight" / "checkpoints")
    assert step == single_step == 4
    print(json.dumps({"weights": largest_difference(pair_values, single_values)}))  # shown by pytest -s
    assert largest_difference(pair_values, single_values) < 1e-5
    losses = {name: np.loadtxt(tmp_path / name / "straight" / "losses" / "train.loss.csv", delimiter=",",
                               skiprows=1)[:, 1] for name in ("pair", "single")}
    np.testing.assert_allclose(losses["pair"], losses["single"], rtol=1e-5)
    kernel = next(key for key, value in single_values.items() if key.startswith("model/") and value.shape == (6, 8))
    assert np.abs(single_values[kernel] - np.array(first["initial"])).max() > 1e-2  # compared after training
    validation = [(tmp_path / name / "straight" / "losses" / "validation.loss.csv").read_text().split()[1:]
                  for name in ("pair", "single")]
    assert len(validation[0]) == len(validation[1]) == 1
    np.testing.assert_allclose(float(validation[0][0].split(",")[1]), float(validation[1][0].split(",")[1]),
                               rtol=1e-5)

    resumed_step, resumed = last_checkpoint(tmp_path / "pair" / "stopped" / "checkpoints")
    assert resumed_step == 4 and largest_difference(resumed, pair_values) == 0.0
    rows = (tmp_path / "pair" / "stopped" / "losses" / "train.loss.csv").read_text().split()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [3, 4]  # one log, by process 0


# --- the slow proof through the command line (DEEPRESTORE_MULTIPROCESS_KILLS=N) ---

STACK = ["stack", "--network", "tiny", "--weights", "random", "--from", "pool2", "--size", "16", "--validation",
         "8", "--batch-size", "4", "--steps", "24", "--checkpoint-every", "3", "--validate-every", "8",
         "--devices", "all", "--name", "job"]


def launch(runs, environment):
    # TMPDIR: process 1's scratch run, left behind by a kill -9, stays under the test's folder
    return subprocess.Popen([sys.executable, "-m", "deeprestore", "--runs", str(runs), "--seed", "3", "--quiet",
                             *STACK], env={**environment, "TMPDIR": str(runs.parent)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def launch_pair(runs, engine):
    if engine == "tensorflow":
        ports = [free_port(), free_port()]
        return [launch(runs, tensorflow_pair_environment(ports, index)) for index in (0, 1)]
    port = free_port()
    return [launch(runs, pair_environment(port, index)) for index in (0, 1)]


def finish(processes, allowed=(0,)):
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, errors) in zip(processes, outputs):
        assert process.returncode in allowed, errors[-3000:]
    return outputs


@pytest.mark.skipif(KILLS == 0, reason="slow: set DEEPRESTORE_MULTIPROCESS_KILLS=N to run it")
@pytest.mark.parametrize("engine", [pytest.param("jax", marks=needs_jax), "tensorflow"])
def test_kill_9_of_one_process_then_the_same_command_ends_as_the_uninterrupted_pair(tmp_path, engine):
    started = time.monotonic()
    pair = launch_pair(tmp_path / "pair", engine)
    single = launch(tmp_path / "single", jax_environment(4) if engine == "jax" else tensorflow_environment())
    finish(pair)
    duration = time.monotonic() - started
    finish([single])
    step, uninterrupted = last_checkpoint(tmp_path / "pair" / "stack" / "job" / "checkpoints")
    _, alone = last_checkpoint(tmp_path / "single" / "stack" / "job" / "checkpoints")
    report = {"pair_seconds": round(duration, 1), "pair_vs_four_devices": largest_difference(uninterrupted, alone)}
    assert report["pair_vs_four_devices"] < 1e-5

    rng = np.random.default_rng(KILLS)
    run = tmp_path / "killed" / "stack" / "job"
    log = run / "losses" / "train.loss.csv"
    kills = []
    for _ in range(KILLS):
        processes = launch_pair(tmp_path / "killed", engine)
        logged = len(log.read_text().split()) - 1 if log.is_file() else 0
        moment, victim = int(rng.integers(logged + 1, step)), int(rng.integers(2))
        while all(process.poll() is None for process in processes) and (
                not log.is_file() or len(log.read_text().split()) - 1 < moment):
            time.sleep(0.05)  # polling the loss log the pair writes; the kill lands after step `moment`
        processes[victim].send_signal(signal.SIGKILL)
        outputs = finish(processes, allowed=(0, 1, -signal.SIGKILL))
        state = json.loads((run / "checkpoints" / "state.json").read_text())
        said = outputs[1 - victim][1].strip().splitlines()
        kills.append({"victim": victim, "after_step": moment, "codes": [p.returncode for p in processes],
                      "checkpoint": state["step"], "said": " | ".join(said[-3:])[-600:]})
    finish(launch_pair(tmp_path / "killed", engine))
    assert (run / "status").read_text().strip() == "complete"
    final_step, resumed = last_checkpoint(run / "checkpoints")
    report.update(kills=kills, resumed_vs_pair=largest_difference(resumed, uninterrupted))
    print(json.dumps(report))
    assert final_step == step
    assert report["resumed_vs_pair"] == 0.0, report
    rows = (run / "losses" / "train.loss.csv").read_text().split()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, step + 1))


@pytest.mark.parametrize(("environment", "arguments", "message"), [
    ({"DEEPRESTORE_COORDINATOR": "127.0.0.1:9", "DEEPRESTORE_PROCESSES": "2", "DEEPRESTORE_PROCESS_ID": "0"}, [],
     "A training over 2 processes got neither --name nor --resume"),
    ({"DEEPRESTORE_PROCESSES": "2"}, ["--name", "job"], "Got DEEPRESTORE_PROCESSES but not"),
])
def test_a_job_of_several_processes_is_refused_before_any_work(tmp_path, monkeypatch, environment, arguments, message):
    from click.testing import CliRunner

    from deeprestore.cli import cli

    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", "stack", "--network", "tiny",
                                      "--weights", "random", "--steps", "2", *arguments])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


class LostAfter(Exception):
    """Stands for a collective failing on a lost process (named as TensorFlow's error is)."""


LostAfter.__name__ = "UnavailableError"


@pytest.mark.parametrize(("error", "checkpoint"), [(LostAfter("peer gone"), 3),
                                                   (distributed.UpdatedPastStep("peer gone"), 2)])
def test_a_lost_process_leaves_the_checkpoint_of_the_last_step_whose_weights_the_primary_holds(
        tmp_path, monkeypatch, error, checkpoint):
    import keras

    from deeprestore import training
    from deeprestore.backend import DataParallel

    class Failing(DataParallel):
        def __init__(self):  # one device of process 0, whatever the job's description
            self.devices, self.processes, self._engine = ("cpu",), 1, None

        def fit(self, model, batches, callbacks):  # three steps as fit runs them, then the failed fourth
            callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
            for index in range(3):
                callbacks.on_train_batch_begin(index)
                model.train_on_batch(*batches[index])
                callbacks.on_train_batch_end(index, {"loss": 1.0})
            raise error

    monkeypatch.setitem(distributed._state, "cluster", distributed.Cluster(2, 0, ("127.0.0.1:1",), "environment"))
    monkeypatch.setattr(distributed, "any_process", bool)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="adam", loss="mse")
    batches = lambda step: (np.full((2, 2), step, "float32"), np.ones((2, 1), "float32"))  # noqa: E731
    with pytest.raises(DeepRestoreError, match=f"stopped at step 4: another process .* checkpoint of step {checkpoint} "
                                               "is kept"):
        training.train(model, batches, training.Schedule(steps=6, checkpoint_every=2),
                       training.Storage(tmp_path / "checkpoints"), parallel=Failing())
    assert training.read_state(tmp_path / "checkpoints")["step"] == checkpoint
