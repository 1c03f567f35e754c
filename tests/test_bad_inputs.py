"""Bad inputs to every command: each is refused with exit code 1 (2 for a malformed option), one
`Error:` line and no traceback, and leaves no run marked `running`.

The files are made by the tests; the network is always `tiny`, so every case is refused in about a
second. A full disk is a file-size limit (`RLIMIT_FSIZE`) in a subprocess; a read-only folder is
simulated, since the suite may run as root, which may write anywhere.
"""

import builtins
import contextlib
import errno
import json
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.images import save_image

ROOT = pathlib.Path(__file__).resolve().parents[1]
HUGE = "10000000"  # 10^7 pixels a side: more bytes than any address space, so allocation fails at once
TINY_DREAM = ("dream", "--network", "tiny", "--size", "16", "--steps", "1", "--octaves", "1")
TINY_TEXTURE = ("texture", "--network", "tiny", "--size", "16", "--steps", "1")
TINY_STYLE = ("style", "--network", "tiny", "--size", "16", "--steps", "1")
TINY_STACK = ("stack", "--network", "tiny", "--steps", "1", "--size", "16", "--batch-size", "1", "--validation", "1")


class Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.exec, (f"open({self.path!r}, 'w').write('ran')",)


@pytest.fixture
def files(tmp_path):
    """Every bad file the cases use, and one good image."""
    folder = tmp_path / "files"
    folder.mkdir()
    save_image(folder / "image.png", np.random.default_rng(0).random((24, 24, 3), dtype=np.float32))
    save_image(folder / "other.png", np.random.default_rng(1).random((24, 24, 3), dtype=np.float32))
    for index in range(2):  # a training folder of good images only
        save_image(folder / "good" / f"{index}.png", np.random.default_rng(index).random((24, 24, 3), dtype=np.float32))
    save_image(folder / "thin.png", np.random.default_rng(0).random((1, 2000, 3), dtype=np.float32))
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.npy").write_text("conv1: 1 2 3\n")
    np.save(folder / "payload.npy", np.array({"conv1": [Payload(folder / "sentinel")]}, dtype=object))
    shared = []
    for _ in range(40):  # a list holding the same list twice: 2^40 elements in a few hundred bytes
        shared = [shared, shared]
    np.save(folder / "shared.npy", np.array({"conv1": shared}, dtype=object))
    (folder / "nan.yaml").write_text("- {name: m1, input: relu1, target: image, weight: .nan}\n")
    (folder / "huge.yaml").write_text("- {name: m1, input: relu1, target: image, hidden: 100000000}\n")
    (folder / "broken.yaml").write_text("- {name: m1, input: [relu1\n")
    (folder / "not-a-model.keras").write_text("not a model")
    (folder / "not-hdf5.h5").write_text("not an HDF5 file")
    return folder


def refused(tmp_path, *arguments, code=1):
    """Runs the CLI and checks the refusal; returns its `Error:` line."""
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments])
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no exception escaped: no traceback
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert_nothing_running(tmp_path / "runs")
    return errors[0]


def assert_nothing_running(runs):
    from deeprestore.errors import DeepRestoreError
    from deeprestore.rundir import RunDir

    for status in pathlib.Path(runs).rglob("status"):
        assert status.read_text().strip() != "running", status
    for config in pathlib.Path(runs).glob("*/*/config.json"):
        with contextlib.suppress(DeepRestoreError):  # a config a case broke on purpose
            assert RunDir.open(config.parent).status != "running"


CASES = {
    # dream
    "dream step size nan": ((*TINY_DREAM, "--step-size", "nan"), 2, "finite"),
    "dream octave scale inf": ((*TINY_DREAM, "--octave-scale", "inf"), 2, "finite"),
    "dream layer weight nan": ((*TINY_DREAM, "--layer", "relu1:nan"), 2, "finite"),
    "dream size too large to allocate": (("dream", "--network", "tiny", "--size", HUGE, "--steps", "1", "--octaves",
                                          "1"), 2, "of memory available"),
    "dream size of 112 GiB": ((*TINY_DREAM, "--size", "100000"), 2, "one 100000x100000 image takes 111.8 GiB"),
    "dream missing image": ((*TINY_DREAM, "--images", "{files}/missing.png"), 1, "missing.png"),
    "dream garbage image": ((*TINY_DREAM, "--images", "{files}/garbage.png"), 1, "garbage.png"),
    "dream empty image": ((*TINY_DREAM, "--images", "{files}/empty.png"), 1, "empty.png"),
    "dream text file as npy weights": ((*TINY_DREAM, "--weights", "{files}/text.npy"), 1, "text.npy"),
    "dream pickled payload as weights": ((*TINY_DREAM, "--weights", "{files}/payload.npy"), 1, "builtins.exec"),
    "dream 40 levels of shared lists as weights": ((*TINY_DREAM, "--weights", "{files}/shared.npy"), 1,
                                                   "spells out more than 1,000,000 elements"),
    "dream cache that is not hdf5": ((*TINY_DREAM, "--cache", "{files}/not-hdf5.h5"), 1, "not an HDF5 file"),
    # texture
    "texture size too large to allocate": (("texture", "--network", "tiny", "--source", "{files}/image.png", "--size",
                                            HUGE, "--steps", "1"), 2, "of memory available"),
    "texture on a 1x2000 source": ((*TINY_TEXTURE, "--source", "{files}/thin.png"), 1, "too small"),
    "texture learning rate inf": ((*TINY_TEXTURE, "--source", "{files}/image.png", "--learning-rate", "inf"), 2,
                                  "finite"),
    "texture blend nan": ((*TINY_TEXTURE, "--source", "{files}/image.png", "--blend", "nan"), 2, "finite"),
    # style
    "style content weight nan": ((*TINY_STYLE, "--content", "{files}/image.png", "--style", "{files}/other.png",
                                  "--content-weight", "nan"), 2, "finite"),
    "style cache that is not hdf5": ((*TINY_STYLE, "--content", "{files}/image.png", "--style", "{files}/other.png",
                                      "--cache", "{files}/not-hdf5.h5"), 1, "not an HDF5 file"),
    # invert
    "invert learning rate nan": (("invert", "--network", "tiny", "--layer", "relu1", "--size", "16", "--steps", "1",
                                  "--learning-rate", "nan"), 2, "finite"),
    "invert garbage image": (("invert", "--network", "tiny", "--layer", "relu1", "--size", "16", "--steps", "1",
                              "--images", "{files}/garbage.png"), 1, "garbage.png"),
    # stack
    "stack nan module weight": ((*TINY_STACK, "--modules", "{files}/nan.yaml", "--images", "{files}/good"), 1,
                                "finite"),
    "stack huge hidden width": ((*TINY_STACK, "--modules", "{files}/huge.yaml", "--images", "{files}/good"), 1,
                                "Out of memory"),
    "stack broken spec": ((*TINY_STACK, "--modules", "{files}/broken.yaml", "--images", "{files}/good"), 1,
                          "could not be parsed"),
    "stack learning rate nan": ((*TINY_STACK, "--learning-rate", "nan"), 2, "finite"),
    # denoise
    "denoise train learning rate nan": (("denoise", "train", "--learning-rate", "nan"), 2, "finite"),
    "denoise apply a file that is not a model": (("denoise", "apply", "--model", "{files}/not-a-model.keras",
                                                  "--images", "{files}/image.png"), 1, "not-a-model.keras"),
    # describe
    "describe train margin nan": (("describe", "train", "--margin", "nan"), 2, "finite"),
    "describe evaluate a file that is not a model": (("describe", "evaluate", "--model", "{files}/not-a-model.keras"),
                                                     1, "not-a-model.keras"),
    # nets
    "nets unknown network": (("nets", "no-such-network"), 1, "no-such-network"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_refused_in_one_line_without_a_traceback(case, files, tmp_path):
    arguments, code, words = CASES[case]

    line = refused(tmp_path, *(argument.format(files=files) for argument in arguments), code=code)

    assert words in line
    assert not (files / "sentinel").exists()


def test_summary_of_a_run_with_a_corrupt_completion_marker_is_one_line(tmp_path):
    from deeprestore.rundir import RunDir

    run = RunDir.join(tmp_path / "runs", "dream", "job", {"settings": {}, "seed": 0, "items": ["000_a"]})
    with run:
        run.complete_item("000_a", {"position": 0})
    (run.path / "complete" / "000_a.json").write_bytes(b"\x00\xff{")

    assert "000_a.json" in refused(tmp_path, "summary", str(run.path))


def test_summary_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    (tmp_path / "runs" / "empty").mkdir(parents=True)

    assert "not a run directory" in refused(tmp_path, "summary", str(tmp_path / "runs" / "empty"))


def test_runs_on_a_read_only_folder_is_one_line_and_creates_nothing(files, tmp_path, monkeypatch):
    def read_only(self, *arguments, **keywords):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)

    line = refused(tmp_path, *TINY_DREAM, "--images", str(files / "image.png"))

    assert "Read-only file system" in line and not (tmp_path / "runs").exists()


def test_a_poisoned_cache_entry_with_the_right_name_is_recomputed_and_the_run_completes(files, tmp_path):
    arguments = ["--runs", str(tmp_path / "runs"), "--quiet", *TINY_STYLE, "--content", str(files / "image.png"),
                 "--style", str(files / "other.png"), "--cache", str(tmp_path / "shared.h5")]
    first = CliRunner().invoke(cli, arguments)
    assert first.exit_code == 0, first.output
    with h5py.File(tmp_path / "shared.h5", "a") as file:
        honest = {name: {layer: file[name][layer][()] for layer in file[name]} for name in file}
        for name in file:
            for layer in file[name]:
                file[name][layer][...] = 1e9  # right name, right metadata, wrong values

    second = CliRunner().invoke(cli, arguments)

    assert second.exit_code == 0, second.output
    with h5py.File(tmp_path / "shared.h5", "r") as file:
        for name, layers in honest.items():
            assert all(np.array_equal(file[name][layer][()], value) for layer, value in layers.items())
    assert_nothing_running(tmp_path / "runs")


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG (Python's default too)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from deeprestore.cli import main
sys.argv = ["deeprestore", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("limit", [2_000, 20_000])
def test_a_full_disk_is_one_line_with_no_run_left_running(limit, files, tmp_path):
    arguments = ["--runs", str(tmp_path / "runs"), "--quiet", *TINY_DREAM, "--size", "64", "--images",
                 str(files / "image.png")]
    process = subprocess.run([sys.executable, "-c", FULL_DISK.format(limit=limit), *arguments], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)

    errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
    assert process.returncode == 1, process.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in process.stderr and "File too large" in errors[0]
    assert_nothing_running(tmp_path / "runs")
    statuses = [json.dumps(path.read_text()) for path in (tmp_path / "runs").rglob("status")]
    assert all("failed" in status for status in statuses)


@pytest.mark.parametrize("contents", ["{not json", '["a list, not a config"]', ""])
def test_summary_of_a_run_with_a_corrupt_config_is_one_line(contents, tmp_path):
    folder = tmp_path / "runs" / "dream" / "broken"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(contents)

    assert "config.json" in refused(tmp_path, "summary", str(folder))


# 20,000 bytes stop stack while it writes its activations' HDF5 files, 50,000 while it writes its checkpoint.
@pytest.mark.parametrize("limit", [20_000, 50_000], ids=["activations", "checkpoint"])
def test_stack_on_a_full_disk_is_one_line_without_an_hdf5_traceback_or_a_crash(limit, files, tmp_path):
    arguments = ["--runs", str(tmp_path / "runs"), "--quiet", *TINY_STACK, "--images", str(files / "good")]
    process = subprocess.run([sys.executable, "-c", FULL_DISK.format(limit=limit), *arguments], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)

    errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
    assert process.returncode == 1, process.stderr[-2000:]  # not -11: HDF5 never crashes on close
    assert len(errors) == 1 and "Traceback" not in process.stderr and "File too large" in errors[0], process.stderr
    assert not list((tmp_path / "runs").rglob("*.partial")), "a half-written file was left behind"
    assert_nothing_running(tmp_path / "runs")


def test_a_pickle_of_shared_lists_is_refused_before_it_is_built(files):
    import time

    from deeprestore.safeload import RefusedPickle, load_npy

    start = time.perf_counter()
    with pytest.raises(RefusedPickle, match="spells out more than"):
        load_npy(files / "shared.npy")
    assert time.perf_counter() - start < 1 and (files / "shared.npy").stat().st_size < 1000


def test_runs_under_a_regular_file_is_one_line(files, tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "file" / "sub"), "--quiet", *TINY_DREAM,
                                      "--images", str(files / "image.png")])

    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert f"'{tmp_path / 'file'}' is a file" in result.output


def test_a_reproduction_spec_with_a_python_tag_is_one_line_and_nothing_runs(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("repro", ROOT / "experiments" / "repro.py")
    repro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repro)
    monkeypatch.setattr(repro, "SPECS", tmp_path)
    (tmp_path / "evil.yaml").write_text(f"title: t\nseed: !!python/object/apply:os.system ['touch {tmp_path}/ran']\n"
                                        "runs: []\nreport: {}\n")

    code = repro.main(["evil", "--out", str(tmp_path / "out")])

    errors = capsys.readouterr().err.splitlines()
    assert code == 1 and len(errors) == 1 and errors[0].startswith("Error: evil.yaml: not a plain YAML spec")
    assert "Nothing was run." in errors[0] and not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()
