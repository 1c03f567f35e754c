"""No file a user is handed runs code when deeprestore reads it.

Each test builds a real payload that writes a sentinel file when executed, first shows that the
unsafe way of reading it does run it (so the test can fail), then reads it the way deeprestore does
and asserts the sentinel never appears and the refusal is one line.
"""

import builtins
import json
import pathlib
import pickle

import keras
import numpy as np
import pytest

from deeprestore import safeload
from deeprestore.errors import DeepRestoreError
from deeprestore.networks import weights


class Payload:
    """Unpickles by calling `exec`, which writes `path`: what a malicious weights file would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.exec, (f"open({self.path!r}, 'w').write('ran')",)


def payload_dict(sentinel):
    return {"conv1": [np.ones((3, 3, 3, 4), np.float32), Payload(sentinel)]}


def assert_refused_in_one_line(error, sentinel, path):
    message = str(error)
    assert not sentinel.exists()
    assert "\n" not in message and path.name in message and "builtins.exec" in message


def assert_runs_unsafely_but_is_refused(path, sentinel, unsafe_load):
    """`unsafe_load(path)` runs the payload (the file is a real attack); deeprestore refuses it unrun."""
    unsafe_load(path)
    assert sentinel.exists()
    sentinel.unlink()

    with pytest.raises(DeepRestoreError) as error:
        weights.read_table(path)

    assert_refused_in_one_line(error.value, sentinel, path)


def test_a_pickled_payload_in_an_npy_is_refused_without_running(tmp_path):
    sentinel, path = tmp_path / "sentinel", tmp_path / "weights.npy"
    np.save(path, np.array(payload_dict(sentinel), dtype=object), allow_pickle=True)
    assert_runs_unsafely_but_is_refused(path, sentinel, lambda path: np.load(path, allow_pickle=True))


def test_a_pickled_payload_in_an_npz_is_refused_without_running(tmp_path):
    sentinel, path = tmp_path / "sentinel", tmp_path / "weights.npz"
    np.savez(path, conv1=np.array([np.ones(3), Payload(sentinel)], dtype=object))
    assert_runs_unsafely_but_is_refused(path, sentinel, lambda path: np.load(path, allow_pickle=True)["conv1"])


def test_a_bare_pickle_named_npy_is_refused_as_not_npy_without_running(tmp_path):
    sentinel, path = tmp_path / "sentinel", tmp_path / "weights.npy"
    path.write_bytes(pickle.dumps(payload_dict(sentinel)))

    with pytest.raises(DeepRestoreError, match="could not be read") as error:
        weights.read_table(path)

    assert not sentinel.exists() and "\n" not in str(error.value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_caffe_style_dict_of_arrays_lists_tuples_and_scalars_still_loads(protocol, tmp_path):
    """Caffe conversions are pickled dicts; what they hold must still come back exactly."""
    contents = {"conv1": {"weights": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "biases": np.ones(2)},
                "fc6": (np.eye(3, dtype=np.float64), np.float32(0.5)), "meta": ["a", 1, 2.5, None, b"x"]}
    path = tmp_path / "caffe.npy"
    array = np.array(contents, dtype=object)
    with open(path, "wb") as file:  # what np.save writes, with the pickle protocol of older writers
        np.lib.format.write_array_header_1_0(file, np.lib.format.header_data_from_array_1_0(array))
        pickle.dump(array, file, protocol=protocol)

    loaded = safeload.load_npy(path).item()

    assert loaded.keys() == contents.keys() and loaded["meta"] == contents["meta"]
    np.testing.assert_array_equal(loaded["conv1"]["weights"], contents["conv1"]["weights"])
    assert loaded["fc6"][1] == np.float32(0.5) and loaded["fc6"][0].dtype == np.float64


def test_a_text_file_named_npy_is_a_one_line_error(tmp_path):
    path = tmp_path / "weights.npy"
    path.write_text("conv1: 1 2 3\n")

    with pytest.raises(DeepRestoreError, match="could not be read") as error:
        weights.read_table(path)

    assert "\n" not in str(error.value)


def lambda_model_file(tmp_path, sentinel):
    """A .keras model whose Lambda layer writes `sentinel` whenever it is built (so also on loading)."""
    target = str(sentinel)  # the closure is saved with the lambda; a string serialises
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x + 0 * open(target, "w").write("ran"))(inputs)  # noqa: SIM115 (the payload)
    path = tmp_path / "model.keras"
    keras.Model(inputs, outputs).save(path)
    sentinel.unlink()
    return path


def test_a_keras_model_with_a_lambda_is_refused_without_running(tmp_path):
    from deeprestore.networks.modelfile import load_model

    sentinel = tmp_path / "sentinel"
    path = lambda_model_file(tmp_path, sentinel)
    keras.saving.load_model(path, safe_mode=False)  # the unsafe way runs it
    assert sentinel.exists()
    sentinel.unlink()

    with pytest.raises(DeepRestoreError) as error:
        load_model(path)

    assert not sentinel.exists() and "\n" not in str(error.value) and "model.keras" in str(error.value)


@pytest.mark.parametrize("loader", ["denoise", "describe"])
def test_the_denoise_and_describe_model_loaders_refuse_a_lambda_without_running(loader, tmp_path):
    from deeprestore.recipes import denoise, describe

    sentinel = tmp_path / "sentinel"
    path = lambda_model_file(tmp_path, sentinel)
    load = {"denoise": denoise.load_model, "describe": describe.load_descriptor}[loader]

    with pytest.raises(DeepRestoreError) as error:
        load(path)

    assert not sentinel.exists() and "\n" not in str(error.value)


def test_a_yaml_spec_with_a_python_tag_is_refused_without_running(tmp_path):
    from deeprestore.inversion.specs import load_specs

    sentinel, path = tmp_path / "sentinel", tmp_path / "specs.yaml"
    path.write_text(f"- !!python/object/apply:builtins.exec [\"open('{sentinel}', 'w').write('ran')\"]\n")

    with pytest.raises(DeepRestoreError, match="could not be parsed") as error:
        load_specs(path)

    assert not sentinel.exists() and "\n" not in str(error.value)


def test_a_checkpoint_holding_a_pickle_does_not_run_it(tmp_path):
    from deeprestore import training

    sentinel = tmp_path / "sentinel"
    np.savez(tmp_path / "step.npz", **{"model/0": np.array([Payload(sentinel)], dtype=object)})
    (tmp_path / training.STATE_FILE).write_text(json.dumps({"step": 1, "file": "step.npz"}))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    with pytest.raises((DeepRestoreError, ValueError)):
        training.load_checkpoint(model, tmp_path)

    assert not sentinel.exists()


def test_a_cache_holds_no_pickles_only_hdf5_datasets_and_attributes(tmp_path):
    """h5py never unpickles: an object written as an attribute comes back as its string, never run."""
    import h5py

    from deeprestore.cache import ActivationCache

    sentinel, path = tmp_path / "sentinel", tmp_path / "cache.h5"
    with h5py.File(path, "w") as file:
        file.create_group("x").attrs["network"] = np.void(pickle.dumps(Payload(sentinel)))

    assert ActivationCache(path).keys() == []
    assert not sentinel.exists() and pathlib.Path(path).is_file()
