"""Run directories: every run is a directory that explains itself.

A `RunDir` is a folder `<root>/<command>/<YYYYmmdd-HHMMSS>-<suffix>/` holding `config.json` (every
resolved option plus the command, creation time and deeprestore version), `argv.txt` (the command
line, shell-quoted), a `status` file (`running`, `complete`, `failed: <message>` or `interrupted`),
`losses/`, `images/`, `notices.txt` (what the run told the user, one line each), `owner.json`, and
later `checkpoints/` (and, in a named run's task, `activations.h5`). Used as a context manager, a run
marks its own status when the block ends. Every file is written atomically, so a killed process
leaves either the old file or the new one, never half of one.

A run over a list of images marks each image complete with `complete/<NNN_name>.json`, written after
its outputs. A *named* run (`RunDir.join`, `<root>/<command>/<name>/`) is shared by the tasks of an
array job and by their resubmissions: each task keeps its own status, argv, losses and activation
cache under `shards/<I>-of-<N>/`, and the run's status is derived from those and from the markers.

`config.json` and each completion record carry the layer naming they were written under
(`layer_naming`, see `deeprestore.layernames`): a run written before VGG's `block4_conv3` meant the
ReLU output is read with its layer names upgraded to what they meant then.

A running run (or task) also records its owner in `owner.json`: host, process id, the process's start
time and a heartbeat renewed every minute while the `with` block runs. A process killed without
marking its status (SIGKILL, a crashed node) is then reported `dead: ...` instead of `running`
forever: at once on the same host (the process is gone), elsewhere once the heartbeat is stale.

A run (a named run's task) has one owner at a time. Creating, joining or resuming it first *claims* it:
an exclusive `flock` on the task's folder, held until the `with` block ends and released by the kernel
if the process dies, so of two processes on one host claiming it at once exactly one gets it; and a
task marked running whose owner is alive (a live process on this host, or a heartbeat fresh on another
host) is refused, naming the owner's host and process. A dead owner's task is taken over. The lock is
on the folder itself, so no lock file is left behind. The tasks of a named run each claim their own
`shards/I-of-N/`, so shards run side by side while one shard cannot run twice.

A run (or task) started inside a SLURM job appends the job's ids and restart count to `jobs.json`, one
record per start, so a run says which jobs wrote it.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import pathlib
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
import weakref

from deeprestore import __version__, layernames
from deeprestore.errors import DeepRestoreError
from deeprestore.sharding import parse_shard

# Three random bytes (16.7 million suffixes) make a collision within one second rare; the exclusive
# mkdir below makes it harmless, and this many retries makes giving up practically impossible.
_SUFFIX_BYTES = 3
_CREATE_ATTEMPTS = 100
_PLAIN_STATUSES = ("running", "complete", "interrupted")
OWNER_FILE = "owner.json"
# The owner's heartbeat is renewed this often; a run on another host whose heartbeat is older than
# HEARTBEAT_STALE is reported dead (ten missed beats: a busy file system may delay a few).
HEARTBEAT_SECONDS = 60
HEARTBEAT_STALE = 600
# A process refused a claim because another holds the lock waits this long for the holder to record
# itself in owner.json (it does so right after locking), so the refusal can name it.
_OWNER_WAIT_SECONDS = 2.0
# What `RunDir.record_job` keeps of a SLURM job's environment: which job and attempt wrote the run.
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                   "SLURM_RESTART_COUNT", "SLURM_JOB_NODELIST", "SLURM_SUBMIT_DIR")
# A status rewritten in place on a full disk stays within the smallest file-system block.
_IN_PLACE_LIMIT = 500


def atomic_write(path, data):
    """Writes `data` to `path` so that readers see the old file or the new one, never a partial one.

    The data goes to a temporary file in the same directory (so the rename cannot cross file
    systems), is flushed to disk, then replaces `path` with `os.replace`.

    Args:
        path: destination file; its directory must exist.
        data: `bytes`, or `str` (written as UTF-8).

    Returns:
        The destination as a `pathlib.Path`.
    """
    path = pathlib.Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates files readable by the owner only; run files are meant to be shared.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def _json_default(value):
    """Converts the non-JSON values that configs commonly hold: numpy values, paths, sets."""
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"Cannot store {type(value).__name__} {value!r} in config.json")


def to_json(data):
    """`data` as deeprestore writes JSON: indent 2, sorted keys, numpy values as numbers and lists."""
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"


def check_folder_name(name, what, example):
    """Raises a `DeepRestoreError` unless `name` is a plain folder name."""
    if not name or name in (".", "..") or any(separator in name for separator in "/\\"):
        raise DeepRestoreError(f"{what} {name!r} is not a folder name; expected a plain name like '{example}'.")


def _command_folder(root, command):
    """Creates `<root>/<command>/` and returns it.

    Raises:
        DeepRestoreError: A file stands where a folder of the path must be.
    """
    parent = pathlib.Path(root) / command
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        blocking = next((folder for folder in [parent, *parent.parents] if folder.exists() and not folder.is_dir()),
                        parent)
        raise DeepRestoreError(f"Runs folder '{root}' cannot be made: '{blocking}' is a file; expected a folder or a "
                               "path that does not exist yet (see --runs).") from None
    return parent


def _write_config(path, config, command, now):
    """Writes `config.json` (with the command, creation time and version) and the empty folders."""
    full_config = {**config, "command": command, "created": now.isoformat(timespec="seconds"),
                   "deeprestore_version": __version__, "layer_naming": layernames.LAYER_NAMING}
    atomic_write(path / "config.json", to_json(full_config))
    (path / "losses").mkdir()
    (path / "images").mkdir()


def _first_difference(stored, given, prefix=""):
    """`(dotted key, stored value, given value)` of the first entry where two dicts differ."""
    for key in sorted(set(stored) | set(given)):
        was, got = stored.get(key), given.get(key)
        if isinstance(was, dict) and isinstance(got, dict) and was != got:
            return _first_difference(was, got, f"{prefix}{key}.")
        if was != got:
            return f"{prefix}{key}", was, got
    return prefix.rstrip("."), stored, given


def _brief(value, limit=60):
    """`repr(value)` cut to `limit` characters, so an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class RunDir:
    """A run's directory and the files that explain it.

    Create one with `RunDir.create` for a new run, `RunDir.join` for a named run shared by the tasks
    of an array job, or `RunDir.open` to resume an existing one.

    Args:
        path: an existing run directory; prefer the class methods.
        shard: a named run's task, `I/N`: its status, argv, losses and activations go to `shards/I-of-N/`.
    """

    def __init__(self, path, shard=None):
        self.path = pathlib.Path(path)
        self._config = self._read_config()
        self.task_path = self.path
        self.previous_owner = None  # owner.json's bytes before `claim`, None when there was none
        self._release = None
        if shard is not None:
            index, count = parse_shard(shard)
            self.task_path = self.path / "shards" / f"{index}-of-{count}"

    def _read_config(self):
        """`config.json` as this version reads it: layer names of an older naming upgraded."""
        return layernames.upgrade_config(json.loads((self.path / "config.json").read_text(encoding="utf-8")))

    @classmethod
    def create(cls, root, command, config, argv=None, name=None):
        """Creates a new, uniquely named run directory and writes its explaining files.

        Args:
            root: folder that holds every command's runs, e.g. `runs`.
            command: name of the command, e.g. `dream`; becomes a subfolder of `root`.
            config: dict of resolved options; numpy values, tuples and paths are stored as JSON.
            argv: the command line as a list; defaults to `sys.argv`.
            name: the run's folder name instead of a timestamped one (a training command's `--name`):
                one process's own run, never shared by tasks (for those, see `join`).

        Returns:
            The new `RunDir`, with status `running`.

        Raises:
            DeepRestoreError: if `command` or `name` is not a plain folder name, or the named run exists.
        """
        check_folder_name(command, "Run command", "dream")
        parent = _command_folder(root, command)
        if name is not None:
            check_folder_name(name, "Run name", "my-run")
            now = datetime.datetime.now().astimezone()
            try:
                (parent / name).mkdir(exist_ok=False)  # exclusive: two jobs starting one name get one run
            except FileExistsError:
                raise DeepRestoreError(f"Run '{parent / name}' already exists; expected a new name.") from None
            _write_config(parent / name, config, command, now)
            run = cls(parent / name)
            run._start(argv)
            return run
        for _ in range(_CREATE_ATTEMPTS):
            now = datetime.datetime.now().astimezone()
            path = parent / f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(_SUFFIX_BYTES)}"
            try:
                # exist_ok=False makes the name ours even against other processes starting now.
                path.mkdir(exist_ok=False)
                break
            except FileExistsError:
                continue
        else:
            raise DeepRestoreError(
                f"Could not create a new run directory under '{parent}'; expected a free name.")
        _write_config(path, config, command, now)
        run = cls(path)
        run._start(argv)
        return run

    @classmethod
    def join(cls, root, command, name, config, shard=None, argv=None, settled=("settings", "seed", "items")):
        """Creates the named run `<root>/<command>/<name>/`, or joins it when another task made it first.

        The first task builds the directory under a temporary name and renames it into place, so a
        task arriving at the same moment sees either no run or a whole one. A later task (or a
        resubmission) joins only when its `settled` config entries equal the stored ones.

        Args:
            root: Folder that holds every command's runs.
            command: Name of the command; a subfolder of `root`.
            name: Name of the run, e.g. the array job's id.
            config: Resolved options, as for `create`, without anything that differs between tasks.
            shard: This task's `I/N`, or None for the whole list; names its folder under `shards/`.
            argv: The command line as a list; defaults to `sys.argv`.
            settled: Config entries every task of the run must share.

        Returns:
            The `RunDir`, with this task's status `running`.

        Raises:
            DeepRestoreError: A name that is not a plain folder name, a folder that is not a run, or
                settings that differ from the stored ones.
        """
        check_folder_name(command, "Run command", "dream")
        check_folder_name(name, "Run name", "my-array-job")
        parent = _command_folder(root, command)
        path = parent / name
        if not path.exists():
            staging = pathlib.Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp"))
            staging.chmod(0o755)  # mkdtemp makes it private; runs are meant to be shared
            _write_config(staging, {**config, "name": name}, command, datetime.datetime.now().astimezone())
            try:
                staging.rename(path)
            except OSError:  # another task's rename came first: join its run
                shutil.rmtree(staging)
        run = cls.open(path)
        if run._config.get("name") != name or run._config.get("command") != command:
            raise DeepRestoreError(f"'{path}' is a run but not the named {command} run '{name}'; expected a new name.")
        stored = {key: run._config.get(key) for key in settled}
        given = json.loads(to_json({key: config.get(key) for key in settled}))
        if stored != given:
            key, was, got = _first_difference(stored, given)
            raise DeepRestoreError(
                f"Run '{path}' was started with {key}={_brief(was)}; this task has {key}={_brief(got)}. Expected "
                "the same settings in every task of a named run (only --shard may differ).")
        run = cls(path, shard or "0/1")
        run._start(argv)
        return run

    def _start(self, argv):
        """Claims this task, then writes its argv and `running` status."""
        self.claim()
        argv = sys.argv if argv is None else argv
        atomic_write(self.task_path / "argv.txt", shlex.join(str(argument) for argument in argv) + "\n")
        self.mark("running")
        self.record_job()

    @classmethod
    def open(cls, path):
        """Re-opens an existing run directory, for example to resume it.

        Raises:
            DeepRestoreError: if `path` is not a directory containing `config.json`.
        """
        path = pathlib.Path(path)
        if not (path / "config.json").is_file():
            raise DeepRestoreError(
                f"'{path}' is not a run directory; expected a folder containing config.json.")
        try:
            run = cls(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DeepRestoreError(
                f"'{path}/config.json' is not valid JSON ({error}); expected a run's config.") from None
        if not isinstance(run._config, dict):
            raise DeepRestoreError(
                f"'{path}/config.json' holds a {type(run._config).__name__}; expected a run's config (a JSON object).")
        return run

    @property
    def name(self):
        """The name of a named run (`join`), else None."""
        return self._config.get("name")

    @property
    def config(self):
        """A copy of the run's configuration as stored in `config.json`."""
        return json.loads(json.dumps(self._config))

    @property
    def images_dir(self):
        return self.path / "images"

    @property
    def losses_dir(self):
        """`losses/` of the run, or of this task in a named run (tasks never append to one file)."""
        return self.task_path / "losses"

    @property
    def activations_path(self):
        """`activations.h5` of the run, or of this task in a named run (HDF5 files take one writer)."""
        return self.task_path / "activations.h5"

    @property
    def checkpoints_dir(self):
        """The `checkpoints/` folder, created on first use so runs that never train stay tidy."""
        directory = self.path / "checkpoints"
        directory.mkdir(exist_ok=True)
        return directory

    @property
    def status(self):
        """The run's status line: `running`, `complete`, `interrupted`, `failed: <message>` or `dead: <owner>`.

        `dead` is a run still marked running whose process is gone (see `owner.json`). A named run's is
        derived: `complete` when every item is, else `running` while a live task runs, else the first
        failed task's `failed: shard I-of-N: <message>`, else the first dead task's `dead: shard I-of-N:
        ...`, else `incomplete: <count> items missing`.
        """
        if self.name is None:
            return _task_status(self.path)
        missing = self.missing_items()
        statuses = {path.parent.name: _task_status(path.parent)
                    for path in sorted((self.path / "shards").glob("*/status"))}
        if not missing:
            return "complete"
        if "running" in statuses.values():
            return "running"
        for kind in ("failed", "dead"):
            for task, status in statuses.items():
                if status.startswith(f"{kind}:"):
                    return f"{kind}: shard {task}: {status[len(kind) + 2:]}"
        return f"incomplete: {len(missing)} items missing"

    def item_complete(self, name):
        """Whether the item `name` (an output name, `NNN_stem`) has a readable completion marker; a
        damaged marker counts as missing, so a resubmission redoes the item and rewrites it."""
        try:
            return isinstance(json.loads((self.path / "complete" / f"{name}.json").read_text(encoding="utf-8")), dict)
        except (OSError, ValueError):
            return False

    def complete_item(self, name, record):
        """Marks the item `name` complete with `record` (position, source, metrics); call after its outputs."""
        (self.path / "complete").mkdir(exist_ok=True)
        record = {"name": name, **record, "layer_naming": layernames.LAYER_NAMING}
        return atomic_write(self.path / "complete" / f"{name}.json", to_json(record))

    def item_records(self):
        """`{name: record}` of every completed item, in name (so position) order; the loss names of a
        record written under an older layer naming are upgraded (see `deeprestore.layernames`).

        Raises:
            DeepRestoreError: A completion marker is not a JSON record.
        """
        records = {}
        for path in sorted((self.path / "complete").glob("*.json")):
            try:
                records[path.stem] = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(records[path.stem], dict) or "position" not in records[path.stem]:
                    raise ValueError(f"a {type(records[path.stem]).__name__} without a position")
                records[path.stem] = layernames.upgrade_record(records[path.stem],
                                                               layernames.config_network(self._config))
            except (OSError, ValueError) as error:
                raise DeepRestoreError(
                    f"Completion marker '{path}' is damaged ({' '.join(str(error).split())[:100]}); expected a JSON "
                    "record written by deeprestore. Resubmit the run (same --name) to redo the item.") from None
        return records

    def missing_items(self):
        """`(position, name)` of each item in `config["items"]` without a completion marker."""
        return [(position, name) for position, name in enumerate(self._config.get("items", ()))
                if not self.item_complete(name)]

    def update_config(self, **values):
        """Merges `values` into `config.json` and rewrites it atomically.

        A named run's file is re-read first, so values another task stored meanwhile are kept.
        """
        if self.name is not None:
            self._config = self._read_config()
        merged = {**self._config, **values}
        text = to_json(merged)
        atomic_write(self.path / "config.json", text)
        self._config = json.loads(text)

    def note(self, message):
        """Appends a notice the run printed (L-BFGS stopping early, a setting not honoured) to this task's
        `notices.txt`, so the run keeps what it told the user."""
        path = self.task_path / "notices.txt"
        previous = path.read_text(encoding="utf-8") if path.is_file() else ""
        atomic_write(path, previous + " ".join(message.split()) + "\n")

    def save_json(self, name, data):
        """Writes `data` as JSON to `<run>/<name>` atomically and returns the file's path."""
        return atomic_write(self.path / name, to_json(data))

    def mark(self, status):
        """Records the run's status: `running`, `complete`, `interrupted` or `failed: <message>`.

        A failure message is folded onto one line so the status file stays one line.
        """
        if status.startswith("failed:"):
            status = "failed: " + " ".join(status[len("failed:"):].split())
        elif status not in _PLAIN_STATUSES:
            raise ValueError(
                f"Unknown run status {status!r}; expected {', '.join(_PLAIN_STATUSES)} or 'failed: ...'")
        if status == "running":
            _write_owner(self.task_path)
        try:
            atomic_write(self.task_path / "status", status + "\n")
        except OSError:
            if not _overwrite_in_place(self.task_path / "status", status):
                raise

    def claim(self):
        """Makes this process the owner of the run (of this task in a named run), or refuses.

        Takes the exclusive lock on the task's folder, then refuses a task still marked running by a live
        owner, and records this process in `owner.json` (its previous bytes kept in `previous_owner`). The
        lock is held until the `with` block ends or `release` is called; a claim already held is kept.

        Raises:
            DeepRestoreError: Another live process owns the task, naming its host and process id.
        """
        if self._release is not None and self._release.alive:
            return
        self.task_path.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = _lock_folder(self.task_path)
        except BlockingIOError:
            raise DeepRestoreError(_owned_message(self.task_path, _waited_owner(self.task_path))) from None
        release = weakref.finalize(self, _unlock, descriptor)
        owner = _live_owner(self.task_path)
        if owner is not None:
            release()
            raise DeepRestoreError(_owned_message(self.task_path, owner))
        path = self.task_path / OWNER_FILE
        self.previous_owner = path.read_bytes() if path.is_file() else None
        _write_owner(self.task_path)
        self._release = release

    def release(self):
        """Gives up the claim taken by `claim` (the `with` block does it when it ends)."""
        if self._release is not None:
            self._release()

    def __enter__(self):
        self._heartbeat = _Heartbeat(self.task_path)
        self._heartbeat.start()
        return self

    def __exit__(self, exception_type, exception, traceback):
        heartbeat = getattr(self, "_heartbeat", None)
        if heartbeat is not None:
            heartbeat.stop()
        try:
            if exception_type is None or (exception_type is SystemExit and exception.code in (0, None)):
                self.mark("complete")
                return False
            # Marking can fail for the reason the run failed (a full disk); the caller sees the first error.
            with contextlib.suppress(OSError):
                if issubclass(exception_type, KeyboardInterrupt):
                    self.mark("interrupted")
                else:
                    self.mark(f"failed: {exception_type.__name__}: {exception}")
            return False  # Never swallow the exception: the caller still sees it.
        finally:
            self.release()

    def record_job(self):
        """Appends this attempt's cluster job (`SLURM_JOB_ID`, array ids, restart count, host, time) to
        the task's `jobs.json`, so a run says which jobs wrote it; outside a SLURM job it writes nothing."""
        job = {name: os.environ[name] for name in SLURM_VARIABLES if name in os.environ}
        if not job:
            return
        path = self.task_path / "jobs.json"
        try:
            jobs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            jobs = []
        jobs = jobs if isinstance(jobs, list) else []
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        atomic_write(path, to_json([*jobs, {"started": started, "host": socket.gethostname(), **job}]))

    def __fspath__(self):
        return os.fspath(self.path)

    def __repr__(self):
        return f"RunDir('{self.path}')"


def _overwrite_in_place(path, status):
    """Rewrites a status file in place, within the block it already holds, for a disk too full for a new file.

    Returns:
        Whether it was written. A reader may see a mixed line only during this one short write.
    """
    data = (status[:_IN_PLACE_LIMIT] + "\n").encode("utf-8", errors="replace")
    try:
        with open(path, "r+b") as file:
            file.write(data)
            file.truncate(len(data))
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        return False
    return True


def _task_status(folder):
    """The status line in `folder/status`, with `running` replaced by `dead: ...` when its owner is gone
    (on this host, its process; elsewhere, its heartbeat is stale)."""
    try:
        status = (folder / "status").read_text(encoding="utf-8").strip()
    except OSError as error:
        return f"failed: no readable status file ({error.strerror or error})"
    if status != "running":
        return status or "failed: empty status file"
    owner = _read_owner(folder)
    if owner is None or _alive(owner):
        return status  # alive, or a run written before owners were recorded: nothing to judge by
    host, pid, beat = owner["host"], owner["pid"], owner["heartbeat"]
    when = datetime.datetime.fromtimestamp(beat).astimezone().isoformat(timespec="seconds")
    return (f"dead: process {pid} on {host} stopped without marking the run (killed?); last heartbeat {when}. "
            "Resume or resubmit it.")


def _process_start(pid):
    """A token that identifies the process `pid` on this host (its start time), or None if there is none.

    The start time tells a reused process id from the owner; where `/proc` is missing, a live pid counts.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as file:
            return file.read().rsplit(")", 1)[1].split()[19]  # field 22, starttime, counted after the name
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def _same_process(pid, recorded_start):
    """Whether process `pid` on this host is still the one that started at `recorded_start`."""
    current = _process_start(pid)
    if current is None:
        return False
    return recorded_start in (None, "alive") or current in ("alive", recorded_start)


def _lock_folder(folder):
    """A descriptor of `folder` holding an exclusive `flock` on it, or None where the file system has no locks.

    Raises:
        BlockingIOError: Another process holds the lock.
    """
    descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise
    except OSError as error:
        os.close(descriptor)
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
            return None  # no folder locks here (some network file systems): owner.json alone decides
        raise
    return descriptor


def _unlock(descriptor):
    if descriptor is not None:
        os.close(descriptor)  # closing the last descriptor releases the flock


def _read_owner(folder):
    """`owner.json` of `folder` as a dict with host, pid and heartbeat, or None when missing or damaged."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        owner.update(host=str(owner["host"]), pid=int(owner["pid"]), heartbeat=float(owner["heartbeat"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return owner


def _alive(owner):
    """Whether the process `owner` names still runs: on this host its process, elsewhere a fresh heartbeat."""
    if owner["host"] == socket.gethostname():
        return _same_process(owner["pid"], owner.get("process_start"))
    return time.time() - owner["heartbeat"] <= HEARTBEAT_STALE


def _is_this_process(owner):
    return (owner["host"] == socket.gethostname() and owner["pid"] == os.getpid()
            and owner.get("process_start") == _process_start(os.getpid()))


def _live_owner(folder):
    """The owner of the task in `folder` when it is marked running by another live process, else None."""
    try:
        status = (folder / "status").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    owner = _read_owner(folder)
    if status != "running" or owner is None or _is_this_process(owner) or not _alive(owner):
        return None
    return owner


def _lock_holder(folder):
    """The id of the process holding the `flock` on `folder`, from `/proc/locks`; None where that is unknown."""
    try:
        stat = os.stat(folder)
        device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
        with open("/proc/locks", encoding="utf-8") as file:
            for line in file:  # e.g. "1: FLOCK  ADVISORY  WRITE 10713 fe:00:260072 0 EOF"
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def owner_state(folder):
    """`alive` or `dead` for a task (the folder of a run, or of a named run's shard) marked running and
    whose owner is recorded; None for one not running (or written before owners were recorded)."""
    try:
        running = (pathlib.Path(folder) / "status").read_text(encoding="utf-8").strip() == "running"
    except OSError:
        return None
    owner = _read_owner(pathlib.Path(folder)) if running else None
    if owner is None:
        return None
    return "alive" if _alive(owner) else "dead"


def _waited_owner(folder):
    """The owner record of the process holding the lock on `folder`, or None when it cannot be told.

    The holder records itself in owner.json right after locking, so the record is awaited up to
    `_OWNER_WAIT_SECONDS`; where the holder's id is known but its record has not come, a record with
    that id and no heartbeat stands for it.
    """
    holder = _lock_holder(folder)
    deadline = time.monotonic() + _OWNER_WAIT_SECONDS
    while True:
        owner = _read_owner(folder)
        mine = owner is not None and owner["host"] == socket.gethostname()
        if mine and (owner["pid"] == holder or (holder is None and not _is_this_process(owner)
                                                and _same_process(owner["pid"], owner.get("process_start")))):
            return owner
        if time.monotonic() > deadline:
            return None if holder is None else {"host": socket.gethostname(), "pid": holder, "heartbeat": None}
        time.sleep(0.02)


def _owned_message(folder, owner):
    """The one-line refusal of a claim on `folder`, naming `owner` (None: an unnamed process on this host)."""
    if owner is None:
        who = f"another process on {socket.gethostname()} (it holds the lock on the folder)"
    elif owner["heartbeat"] is None:
        who = f"process {owner['pid']} on {owner['host']} (it holds the lock on the folder)"
    else:
        age = max(0, round(time.time() - owner["heartbeat"]))
        who = f"process {owner['pid']} on {owner['host']}, alive (heartbeat {age} s ago)"
    return (f"Run '{folder}' is owned by {who}; expected a run with no live owner. Wait for it to end, or stop it "
            "and start again: a dead owner's run is taken over.")


def _write_owner(folder):
    """Records this process as the owner of the task in `folder`, with a fresh heartbeat."""
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
             "heartbeat": time.time()}
    atomic_write(folder / OWNER_FILE, to_json(owner))


class _Heartbeat:
    """Renews the owner's heartbeat every `HEARTBEAT_SECONDS` from a daemon thread until stopped."""

    def __init__(self, folder):
        self.folder = folder
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="deeprestore-heartbeat", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopped.set()
        self.thread.join()

    def _beat(self):
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):  # a full or read-only disk must not kill the run from here
                _write_owner(self.folder)
