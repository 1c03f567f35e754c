"""Run directories: every run is a directory that explains itself.

A `RunDir` is a folder `<root>/<command>/<YYYYmmdd-HHMMSS>-<suffix>/` holding `config.json` (every
resolved option plus the command, creation time and deeprestore version), `argv.txt` (the command
line, shell-quoted), a `status` file (`running`, `complete`, `failed: <message>` or `interrupted`),
`losses/`, `images/`, and later `activations.h5` and `checkpoints/`. Used as a context manager, a run
marks its own status when the block ends. Every file is written atomically, so a killed process
leaves either the old file or the new one, never half of one.
"""

import contextlib
import datetime
import json
import os
import pathlib
import secrets
import shlex
import sys
import tempfile

from deeprestore import __version__
from deeprestore.errors import DeepRestoreError

# Three random bytes (16.7 million suffixes) make a collision within one second rare; the exclusive
# mkdir below makes it harmless, and this many retries makes giving up practically impossible.
_SUFFIX_BYTES = 3
_CREATE_ATTEMPTS = 100
_PLAIN_STATUSES = ("running", "complete", "interrupted")


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


class RunDir:
    """A run's directory and the files that explain it.

    Create one with `RunDir.create` for a new run, or `RunDir.open` to resume an existing one.

    Args:
        path: an existing run directory; prefer the two class methods.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self._config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))

    @classmethod
    def create(cls, root, command, config, argv=None):
        """Creates a new, uniquely named run directory and writes its explaining files.

        Args:
            root: folder that holds every command's runs, e.g. `runs`.
            command: name of the command, e.g. `dream`; becomes a subfolder of `root`.
            config: dict of resolved options; numpy values, tuples and paths are stored as JSON.
            argv: the command line as a list; defaults to `sys.argv`.

        Returns:
            The new `RunDir`, with status `running`.

        Raises:
            DeepRestoreError: if `command` is not a plain folder name.
        """
        if not command or command in (".", "..") or any(sep in command for sep in "/\\"):
            raise DeepRestoreError(
                f"Run command {command!r} is not a folder name; expected a plain name like 'dream'.")
        parent = pathlib.Path(root) / command
        parent.mkdir(parents=True, exist_ok=True)
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
        full_config = {**config, "command": command, "created": now.isoformat(timespec="seconds"),
                       "deeprestore_version": __version__}
        atomic_write(path / "config.json", to_json(full_config))
        argv = sys.argv if argv is None else argv
        atomic_write(path / "argv.txt", shlex.join(str(argument) for argument in argv) + "\n")
        atomic_write(path / "status", "running\n")
        (path / "losses").mkdir()
        (path / "images").mkdir()
        return cls(path)

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
            return cls(path)
        except json.JSONDecodeError as error:
            raise DeepRestoreError(
                f"'{path}/config.json' is not valid JSON ({error}); expected a run's config.") from None

    @property
    def config(self):
        """A copy of the run's configuration as stored in `config.json`."""
        return json.loads(json.dumps(self._config))

    @property
    def images_dir(self):
        return self.path / "images"

    @property
    def losses_dir(self):
        return self.path / "losses"

    @property
    def activations_path(self):
        return self.path / "activations.h5"

    @property
    def checkpoints_dir(self):
        """The `checkpoints/` folder, created on first use so runs that never train stay tidy."""
        directory = self.path / "checkpoints"
        directory.mkdir(exist_ok=True)
        return directory

    @property
    def status(self):
        """The run's status line: `running`, `complete`, `interrupted` or `failed: <message>`."""
        return (self.path / "status").read_text(encoding="utf-8").strip()

    def update_config(self, **values):
        """Merges `values` into `config.json` and rewrites it atomically."""
        merged = {**self._config, **values}
        text = to_json(merged)
        atomic_write(self.path / "config.json", text)
        self._config = json.loads(text)

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
        atomic_write(self.path / "status", status + "\n")

    def __enter__(self):
        return self

    def __exit__(self, exception_type, exception, traceback):
        if exception_type is None or (exception_type is SystemExit and exception.code in (0, None)):
            self.mark("complete")
        elif issubclass(exception_type, KeyboardInterrupt):
            self.mark("interrupted")
        else:
            self.mark(f"failed: {exception_type.__name__}: {exception}")
        return False  # Never swallow the exception: the caller still sees it.

    def __fspath__(self):
        return os.fspath(self.path)

    def __repr__(self):
        return f"RunDir('{self.path}')"
