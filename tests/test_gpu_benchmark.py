"""benchmarks/gpu.py, the GPU machine's one prepared command: its smoke run works on a CPU, and on JAX it
imports no TensorFlow (the GPU machine has none)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_run_prints_every_figure(capsys):
    load_script().main(["--smoke"])
    output = capsys.readouterr().out
    for line in ("matmul float32", "dream 32 px float32", "dream 32 px bfloat16", "style 32 px float32",
                 "style 32 px bfloat16", "joint stack", "DnCNN training", "descriptor training", "data-parallel"):
        assert line in output, output
    rows = [line.split() for line in output.splitlines() if line.startswith(("dream ", "style "))]
    assert all(float(row[4]) > 0 and float(row[5]) > 0 and row[6].endswith("%") for row in rows), output


def test_the_script_imports_no_tensorflow_on_jax():
    code = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='gpu_benchmark'); "
            "import deeprestore.inversion.stack, deeprestore.restoration.models, deeprestore.descriptors.model; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    result = subprocess.run([sys.executable, "-c", code, str(SCRIPT)], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
