"""One training run over several processes, one per machine: who the processes are, and the few
collective operations the training path needs beyond the engine's own data parallelism.

A job is a `Cluster` of `processes`, this one being `process_id` (0 is the primary: the only one that
writes the run directory, logs, TensorBoard events and checkpoints). `cluster_from_environment` reads it
from SLURM (`srun` with more than one task: `SLURM_NTASKS`, `SLURM_PROCID`, `SLURM_STEP_NODELIST`) or
from `DEEPRESTORE_COORDINATOR` (`host:port` of process 0; on TensorFlow every process's, comma-separated,
process 0's first), `DEEPRESTORE_PROCESSES` and `DEEPRESTORE_PROCESS_ID`; without either, one process.
`initialize()` starts the engine's own multi-process runtime once, before anything else touches it. On
JAX, `jax.distributed.initialize` (CPU collectives through gloo), after which `jax.devices()` are the
devices of every process and `backend.DataParallel` lays the batch over all of them. On TensorFlow, a
`tf.distribute.MultiWorkerMirroredStrategy` over the workers `TF_CONFIG` would name (`SlurmClusterResolver`
under SLURM; otherwise every worker's `host:port` in `DEEPRESTORE_COORDINATOR`), the `DataParallel` of the
job. Keras 3.15's `fit` fails under that strategy before the first step (`_maybe_symbolic_build` reduces
the batch, a nested `PerReplica`, with the strategy's `reduce`, which takes one value; skipping that,
`reduce_per_replica` reduces the scalar loss along axis 0), so there `DataParallel.fit` runs Keras's own
`train_step` under the strategy in a step of its own (`backend._multi_worker_fit`).

With the engine's data parallelism every training step is one collective operation, so a process that
dies makes the next step fail on the others (JAX's gloo reports the lost connection as an error; with
`jax_enable_recoverability` the survivors raise it instead of aborting; TensorFlow's coordination service
misses the dead worker's heartbeats and aborts the survivors' collectives with `UnavailableError`, 10 to
13 s after a kill -9 here), and `training.train` then writes a checkpoint of the last complete step. Stopping on
a signal must also be agreed (`any_process`, on TensorFlow an all-reduce of the flags), or the processes
would stop at different steps and the ones still training would wait forever.
"""

import atexit
import contextlib
import dataclasses
import os
import re
import time

import numpy as np

from deeprestore.errors import DeepRestoreError

VARIABLES = ("DEEPRESTORE_COORDINATOR", "DEEPRESTORE_PROCESSES", "DEEPRESTORE_PROCESS_ID")
# The coordinator's port under SLURM unless DEEPRESTORE_PORT says otherwise: JAX's own choice, in the
# top 4096 ports and varying with the job, so two jobs sharing a first node do not meet.
_PORT_RANGE = 2**12


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The processes of one job.

    Attributes:
        processes: How many processes (one per machine).
        process_id: This process's index, 0 to `processes - 1`; 0 is the primary.
        addresses: `host:port` of process 0 first, then of the others where known (TensorFlow needs
            every worker's; JAX only the coordinator's).
        source: Where the description came from: `slurm` or `environment`.
    """

    processes: int
    process_id: int
    addresses: tuple
    source: str

    @property
    def coordinator(self):
        return self.addresses[0]


def _integer(environ, name, least):
    text = environ.get(name, "")
    if not text.strip().lstrip("-").isdigit() or int(text) < least:
        raise DeepRestoreError(f"{name}={text!r} is not a whole number of at least {least}; expected e.g. "
                               f"{name}={least + 1 if name.endswith('PROCESSES') else least}.")
    return int(text)


def first_host(node_list):
    """The first host of a SLURM node list: `node[001-004],gpu7` -> `node001`, `gpu7,node[1-2]` -> `gpu7`."""
    head = node_list.split(",", 1)[0]
    if "[" not in head:
        return head
    prefix, ranges = node_list.split("[", 1)
    return prefix + re.split(r"[,\-\]]", ranges, maxsplit=1)[0]


def cluster_from_environment(environ=None):
    """The `Cluster` the environment describes, or None for a single process.

    SLURM counts when a step runs several tasks (`srun` of a job with `--ntasks-per-node=1` on several
    nodes); the explicit variables take precedence.

    Raises:
        DeepRestoreError: The explicit variables are incomplete or inconsistent.
    """
    environ = os.environ if environ is None else environ
    given = [name for name in VARIABLES if environ.get(name)]
    if given:
        if len(given) < len(VARIABLES):
            missing = ", ".join(name for name in VARIABLES if name not in given)
            raise DeepRestoreError(f"Got {', '.join(given)} but not {missing}; expected all three to run one training "
                                   "over several processes (or none of them).")
        processes = _integer(environ, "DEEPRESTORE_PROCESSES", 1)
        process_id = _integer(environ, "DEEPRESTORE_PROCESS_ID", 0)
        addresses = tuple(part.strip() for part in environ["DEEPRESTORE_COORDINATOR"].split(",") if part.strip())
        if process_id >= processes:
            raise DeepRestoreError(f"DEEPRESTORE_PROCESS_ID={process_id} is not below "
                                   f"DEEPRESTORE_PROCESSES={processes}; expected 0 to {processes - 1}.")
        if len(addresses) not in (1, processes) or not all(":" in address for address in addresses):
            raise DeepRestoreError(f"DEEPRESTORE_COORDINATOR={environ['DEEPRESTORE_COORDINATOR']!r} is not the "
                                   f"host:port of process 0 or of all {processes} processes; expected "
                                   "e.g. 10.0.0.1:61000.")
        return Cluster(processes, process_id, addresses, "environment") if processes > 1 else None
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
    if tasks and tasks.isdigit() and int(tasks) > 1 and "SLURM_STEP_ID" in environ and "SLURM_PROCID" in environ:
        port = environ.get("DEEPRESTORE_PORT") or str(
            65536 - _PORT_RANGE + int(environ.get("SLURM_JOB_ID", "0") or 0) % _PORT_RANGE)
        host = first_host(environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "localhost"))
        return Cluster(int(tasks), int(environ["SLURM_PROCID"]), (f"{host}:{port}",), "slurm")
    return None


def described(environ=None):
    """Whether the environment asks for several processes (even badly: `initialize` then says what is wrong)."""
    try:
        return cluster_from_environment(environ) is not None
    except DeepRestoreError:
        return True


_state = {}


def initialize():
    """Starts the multi-process runtime of the active backend once, for the job the environment describes.

    Must run before the backend computes anything (before `backend.parallel_devices`).

    Returns:
        The `Cluster`, or None for a single process (nothing is started).

    Raises:
        DeepRestoreError: A bad description (see `cluster_from_environment`), or another backend than
            TensorFlow and JAX.
    """
    if "cluster" in _state:
        return _state["cluster"]
    cluster = cluster_from_environment()
    if cluster is not None:
        import keras  # the backend's name only: `backend` builds on this module, not the other way round

        engine = keras.backend.backend()
        if engine == "tensorflow":
            _start_tensorflow(cluster)
        elif engine == "jax":
            _start_jax(cluster)
        else:
            raise DeepRestoreError(f"A training over {cluster.processes} processes runs on TensorFlow or JAX; got "
                                   f"backend '{engine}'. Expected --backend tensorflow or --backend jax.")
    _state["cluster"] = cluster
    return cluster


def _start_tensorflow(cluster):
    """Creates the job's `tf.distribute.MultiWorkerMirroredStrategy` (before TensorFlow computes anything:
    it starts this process's gRPC server and joins the others)."""
    import tensorflow as tf

    _state["strategy"] = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=tensorflow_resolver(cluster))


def tensorflow_resolver(cluster):
    """The TensorFlow cluster resolver of the job, the workers that `TF_CONFIG` would describe.

    Under SLURM, TensorFlow's `SlurmClusterResolver` (one task per node, every worker on the job's port); with
    the explicit variables, every worker's `host:port` in `DEEPRESTORE_COORDINATOR`, process 0's first.

    Raises:
        DeepRestoreError: SLURM runs several tasks on a node, or the variables name only process 0.
    """
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    if cluster.source == "slurm":
        port = int(cluster.coordinator.rsplit(":", 1)[1])
        try:
            # One task per node sees all of its node's GPUs: TensorFlow's own GPU allocation stays off (its
            # counts only have to be consistent, so that it does not ask nvidia-smi).
            resolver = resolvers.SlurmClusterResolver(port_base=port, tasks_per_node=1, gpus_per_node=1,
                                                      gpus_per_task=1, auto_set_gpu=False)
            resolver.cluster_spec()
        except RuntimeError as error:
            raise DeepRestoreError(f"TensorFlow's SLURM cluster resolver refused this job step ({error}); expected "
                                   "one task per node (srun --ntasks-per-node=1).") from None
        return resolver
    if len(cluster.addresses) != cluster.processes:
        raise DeepRestoreError(
            f"DEEPRESTORE_COORDINATOR={','.join(cluster.addresses)!r} names {len(cluster.addresses)} of the "
            f"{cluster.processes} processes; on TensorFlow expected every process's host:port, process 0's first "
            "(e.g. 10.0.0.1:61000,10.0.0.2:61000).")
    return resolvers.SimpleClusterResolver(tf.train.ClusterSpec({"worker": list(cluster.addresses)}),
                                           task_type="worker", task_id=cluster.process_id, rpc_layer="grpc")


def strategy():
    """The `MultiWorkerMirroredStrategy` of a TensorFlow job of several processes, or None."""
    return _state.get("strategy")


def _start_jax(cluster):
    import jax

    # Collectives between the CPUs of several processes need gloo (on GPUs NCCL is used); recoverability
    # turns a lost peer into an error the survivors raise (and checkpoint after) instead of an abort.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_recoverability", True)
    jax.distributed.initialize(cluster.coordinator, cluster.processes, cluster.process_id,
                               cluster_detection_method="deactivate")  # SLURM's would take one GPU per process
    atexit.register(_leave_jax, cluster)  # runs before JAX's own shutdown (registered earlier)


def _leave_jax(cluster, wait_seconds=60):
    """Lets every process end before process 0 takes the coordination service away with it.

    With recoverable tasks JAX's shutdown no longer waits for the others, and a process whose shutdown
    finds the service gone aborts. So all wait at a barrier (skipped when a peer is lost), the others
    leave the service, and process 0 waits until they have left (at most `wait_seconds` each).
    """
    from jax._src import distributed as jax_distributed  # the client: JAX has no public barrier without devices

    client = jax_distributed.global_state.client
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.wait_at_barrier("deeprestore-exit", wait_seconds * 1000)
    if cluster.process_id != 0:
        with contextlib.suppress(Exception):
            jax_distributed.shutdown()
        return
    others = list(range(1, cluster.processes))
    deadline = time.monotonic() + wait_seconds
    with contextlib.suppress(Exception):
        while client.get_live_nodes(others) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting on the other processes' shutdown, nothing to compute meanwhile


def cluster():
    """The `Cluster` `initialize` started, or None (one process, or not initialised)."""
    return _state.get("cluster")


def process_count():
    return cluster().processes if cluster() is not None else 1


def process_index():
    return cluster().process_id if cluster() is not None else 0


def is_primary():
    """Whether this process writes the run (process 0, or the only one)."""
    return process_index() == 0


def process_slice(batch):
    """This process's part of a global batch: every array's rows `[i * n / P, (i + 1) * n / P)` for
    process `i` of `P` (the engine joins the parts back into the global batch, in process order)."""
    count, index = process_count(), process_index()
    if count == 1:
        return batch

    def part(value):
        if isinstance(value, np.ndarray) and value.ndim:
            size = len(value) // count
            return value[index * size:(index + 1) * size]
        return value

    import keras

    return keras.tree.map_structure(part, batch)


def any_process(flag):
    """Whether `flag` is true on any process (a collective: every process must call it, in step)."""
    if process_count() == 1:
        return bool(flag)
    if strategy() is not None:
        return bool(_tensorflow_sum(float(bool(flag))) > 0)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.array([int(bool(flag))], np.int32))).max())


def _tensorflow_sum(value):
    """The sum over every replica of the job of `value`, which each process gives its replicas (once each)."""
    import tensorflow as tf

    if "sum" not in _state:
        job = strategy()
        share = 1.0 / job.num_replicas_in_sync * process_count()  # the process's replicas add up to its value

        @tf.function
        def total(value):
            replicas = job.run(lambda: value * share)
            return job.reduce(tf.distribute.ReduceOp.SUM, replicas, axis=None)

        _state["sum"] = total
    return float(_state["sum"](tf.constant(value, tf.float32)))


def barrier(name):
    """Waits until every process has reached the barrier `name` (a collective, like `any_process`)."""
    if process_count() > 1:
        any_process(False)


def is_lost_peer(error):
    """Whether `error` is a collective operation failing because another process of the job is gone."""
    if process_count() == 1:
        return False
    if isinstance(error, UpdatedPastStep):
        return True
    return type(error).__name__ in ("XlaRuntimeError", "JaxRuntimeError", "UnavailableError", "DeadlineExceededError",
                                    "AbortedError", "CancelledError")


class UpdatedPastStep(Exception):
    """A collective after a step's update failed because another process is gone: this process's weights
    are one step past the last step it completed, so they are no checkpoint of that step."""
