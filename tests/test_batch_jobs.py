"""Array jobs: shards of one named run share its directory, resubmissions skip complete images, and
`deeprestore summary` merges the items and names the gaps."""

import csv
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.images import save_image

TINY_DREAM = ("dream", "--network", "tiny", "--size", "32", "--octaves", "1", "--steps", "2", "--jitter", "0")
TINY_INVERT = ("invert", "--network", "tiny", "--layer", "relu1", "--size", "16", "--steps", "2")


def invoke(tmp_path, *arguments, quiet=True):
    return CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), *(["--quiet"] if quiet else []), *arguments])


def run_directory(result):
    assert result.exit_code == 0, result.output
    return pathlib.Path(result.output.strip().splitlines()[-1].strip())


@pytest.fixture
def folder(tmp_path):
    """Five small flat images, image0.png .. image4.png."""
    path = tmp_path / "inputs"
    for index in range(5):
        save_image(path / f"image{index}.png", np.full((16, 16, 3), (index + 1) / 6, np.float32))
    return path


def test_two_shards_with_one_name_land_in_one_run_and_the_summary_lists_every_item(tmp_path, folder):
    runs = {run_directory(invoke(tmp_path, *TINY_INVERT, "--images", str(folder), "--shard", f"{index}/2",
                                 "--name", "job7")) for index in range(2)}
    assert runs == {tmp_path / "runs" / "invert" / "job7"}
    run = runs.pop()
    names = [f"{index:03d}_image{index}" for index in range(5)]
    assert sorted(path.stem for path in (run / "outputs").iterdir()) == names
    assert sorted(path.stem for path in (run / "complete").iterdir()) == names
    config = json.loads((run / "config.json").read_text())
    assert "shard" not in config["settings"] and config["items"] == names and config["name"] == "job7"
    for task in ("0-of-2", "1-of-2"):
        assert (run / "shards" / task / "status").read_text().strip() == "complete"
        assert (run / "shards" / task / "metrics.json").is_file() and (run / "shards" / task / "losses").is_dir()
    assert (run / "shards" / "1-of-2" / "argv.txt").is_file() and not (run / "status").exists()

    result = invoke(tmp_path, "summary", str(run))
    assert result.exit_code == 0, result.output
    assert "5 of 5 items complete; none missing (status: complete)" in result.output
    with open(run / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["name"] for row in rows] == names and [row["position"] for row in rows] == list("01234")
    assert all(float(row["psnr"]) > 0 and float(row["feature_error"]) >= 0 for row in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["missing"] == [] and summary["mean"]["psnr"] == pytest.approx(
        np.mean([float(row["psnr"]) for row in rows]))


def test_rerunning_a_named_run_skips_complete_images_and_redoes_an_incomplete_one(tmp_path, folder):
    arguments = (*TINY_DREAM, "--images", str(folder), "--shard", "0/2", "--name", "again")
    run = run_directory(invoke(tmp_path, *arguments))
    dreams = {path.parent.name: path for path in sorted(run.glob("items/*/dream.png"))}
    assert sorted(dreams) == ["000_image0", "002_image2", "004_image4"]
    before = {name: path.stat().st_mtime_ns for name, path in dreams.items()}
    (run / "complete" / "002_image2.json").unlink()  # as if the task had been killed while dreaming it
    dreams["002_image2"].unlink()

    result = invoke(tmp_path, *arguments, quiet=False)
    assert run_directory(result) == run
    assert f"Skipping 2 of 3 images already complete in {run}." in result.output
    assert {name: dreams[name].stat().st_mtime_ns for name in ("000_image0", "004_image4")} == {
        name: before[name] for name in ("000_image0", "004_image4")}
    assert (run / "complete" / "002_image2.json").is_file() and dreams["002_image2"].is_file()
    assert len((run / "items" / "002_image2" / "losses" / "total.csv").read_text().splitlines()) == 1 + 2
    marker = json.loads((run / "complete" / "002_image2.json").read_text())
    assert marker["position"] == 2 and marker["metrics"]["total"] < 0
    assert json.loads((run / "config.json").read_text())["items"][2] == "002_image2"

    result = invoke(tmp_path, *arguments, quiet=False)
    assert "Skipping 3 of 3 images already complete" in result.output and run_directory(result) == run


def test_an_image_dreams_the_same_whatever_the_images_before_it_in_its_task(tmp_path, folder):
    noise = ("--start", "noise", "--jitter", "2")
    after_one = run_directory(invoke(tmp_path, *TINY_DREAM, *noise, "--images", str(folder), "--shard", "1/2"))
    alone = run_directory(invoke(tmp_path, *TINY_DREAM, *noise, "--images", str(folder), "--shard", "3/4"))
    image = "items/003_image3/dream.png"
    assert (after_one / image).read_bytes() == (alone / image).read_bytes()


@pytest.mark.parametrize("change, message", [
    (("--steps", "3"), "was started with settings.steps=2; this task has settings.steps=3"),
    (("--layer", "relu2"), "settings.layers=[]; this task has settings.layers=['relu2']"),
])
def test_a_task_with_other_settings_cannot_join_a_named_run(tmp_path, folder, change, message):
    run_directory(invoke(tmp_path, *TINY_DREAM, "--images", str(folder), "--shard", "0/5", "--name", "mixed"))
    result = invoke(tmp_path, *TINY_DREAM, "--images", str(folder), "--shard", "1/5", "--name", "mixed", *change)
    assert result.exit_code == 1 and message in result.output and "only --shard may differ" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_named_run_with_another_seed_or_list_is_refused(tmp_path, folder):
    run_directory(invoke(tmp_path, *TINY_INVERT, "--images", str(folder), "--shard", "0/3", "--name", "fixed"))
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--seed", "1", *TINY_INVERT, "--images",
                                      str(folder), "--shard", "1/3", "--name", "fixed"])
    assert result.exit_code == 1 and "seed=0; this task has seed=1" in result.output
    (folder / "image9.png").write_bytes((folder / "image0.png").read_bytes())
    result = invoke(tmp_path, *TINY_INVERT, "--images", str(folder), "--shard", "1/3", "--name", "fixed")
    assert result.exit_code == 1 and "was started with items=" in result.output


def test_summary_names_the_missing_items_by_position(tmp_path, folder):
    run = run_directory(invoke(tmp_path, *TINY_INVERT, "--images", str(folder), "--shard", "1/3", "--name", "gaps"))
    result = invoke(tmp_path, "summary", str(run))
    assert result.exit_code == 0, result.output
    assert ("2 of 5 items complete; missing 3: 0 (000_image0), 2 (002_image2), 3 (003_image3) "
            "(status: incomplete: 3 items missing)") in result.output
    summary = json.loads((run / "summary.json").read_text())
    assert [row["position"] for row in summary["rows"]] == [1, 4]
    assert [item["position"] for item in summary["missing"]] == [0, 2, 3]


def test_summary_of_a_run_without_items_is_a_clear_error(tmp_path):
    result = invoke(tmp_path, "invert", "--method", "deconvnet", "--network", "tiny", "--weights", "random",
                    "--size", "32", "--channels", "1", "--top", "1")
    result = invoke(tmp_path, "summary", str(run_directory(result)))
    assert result.exit_code == 1 and "lists no items; expected a dream, style" in result.output


@pytest.fixture
def model_file(tmp_path):
    from deeprestore.restoration import models

    path = tmp_path / "dncnn.keras"
    models.create_model("dncnn", channels=3, seed=0).save(path)
    return path


def test_denoise_apply_shards_cover_a_list_exactly_once_and_merge_in_one_named_run(tmp_path, folder, model_file):
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{folder / f'image{index}.png'}\n" for index in range(5)))
    for index in range(3):
        run = run_directory(invoke(tmp_path, "denoise", "apply", "--model", str(model_file), "--images", str(listing),
                                   "--corruption", "gaussian:0.1", "--no-baselines", "--shard", f"{index}/3",
                                   "--name", "restore"))
        done = sorted(path.stem for path in (run / "complete").iterdir())
        assert done == sorted(f"{position:03d}_image{position}" for position in range(5) if position % 3 <= index)
    for position in range(5):
        item = run / "items" / f"{position:03d}_image{position}"
        assert (item / "images" / "model.png").is_file() and (item / "metrics.json").is_file()
    result = invoke(tmp_path, "summary", str(run))
    assert "5 of 5 items complete; none missing" in result.output
    rows = json.loads((run / "summary.json").read_text())["rows"]
    assert [row["position"] for row in rows] == list(range(5))
    assert all(set(row) >= {"input.psnr", "model.psnr", "model.ssim"} for row in rows)


def test_denoise_apply_refuses_a_clean_list_of_another_length(tmp_path, folder, model_file):
    result = invoke(tmp_path, "denoise", "apply", "--model", str(model_file), "--images", str(folder),
                    "--clean", str(folder / "image0.png"))
    assert result.exit_code == 1 and "--clean lists 1 image(s) for 5 in --images;" in result.output


@pytest.mark.slow  # tests/test_experiments.py interrupts every experiment; test_cluster_templates.py resubmits
def test_sigterm_interrupts_an_optimisation_task_and_the_resubmission_skips_what_was_complete(tmp_path, folder):
    """A cluster pre-empting a task sends SIGTERM: the task's status says interrupted, it exits 130, and
    the requeued task (same --name) redoes only the images that were not complete."""
    arguments = [sys.executable, "-m", "deeprestore", "--runs", str(tmp_path / "runs"), "--quiet", *TINY_DREAM,
                 "--images", str(folder), "--name", "preempted"]
    arguments[arguments.index("--steps") + 1] = "400"
    run = tmp_path / "runs" / "dream" / "preempted"
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "complete" / "000_image0.json").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130 and "Interrupted." in error
    assert [path.read_text().strip() for path in run.glob("shards/*/status")] == ["interrupted"]
    done = len(list((run / "complete").iterdir()))
    assert 1 <= done < 5

    resumed = invoke(tmp_path, *arguments[arguments.index("dream"):], quiet=False)  # the requeued task
    assert run_directory(resumed) == run and f"Skipping {done} of 5 images already complete" in resumed.output
    assert len(list((run / "complete").iterdir())) == 5
