"""benchmarks/gpu.py, the GPU machine's one prepared command: its smoke run works on a CPU, on one
TensorFlow device and on two JAX devices (data-parallel), and on JAX it imports no TensorFlow (the GPU
machine has none)."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_figures(output):
    for line in ("matmul float32", "dream 32 px float32", "dream 32 px bfloat16", "style 32 px float32",
                 "style 32 px bfloat16", "style L-BFGS 32 px float32", "joint stack", "DnCNN training",
                 "descriptor training", "data-parallel", "peak device memory"):
        assert line in output, output
    rows = [line.split() for line in output.splitlines()
            if line.startswith(("dream ", "style ")) and "L-BFGS" not in line]
    assert all(float(row[4]) > 0 and float(row[5]) > 0 and row[6].endswith("%") and float(row[7]) >= 0
               for row in rows), output
    lbfgs = re.search(r"L-BFGS 32 px float32: ([\d.]+) ms/iteration over (\d+) iterations, (\d+)% of it on the host",
                      output)
    assert lbfgs and float(lbfgs.group(1)) > 0 and int(lbfgs.group(2)) >= 1 and 0 <= int(lbfgs.group(3)) <= 100, output


@pytest.mark.slow  # the two-device JAX smoke run below runs the same script, as the GPU machine does
def test_the_smoke_run_prints_every_figure(capsys):
    load_script().main(["--smoke"])
    output = capsys.readouterr().out
    check_figures(output)
    assert "data-parallel step: one device only, not run" in output


def test_the_smoke_run_on_two_jax_devices_trains_data_parallel_and_imports_no_tensorflow():
    """The GPU machine has JAX and no TensorFlow; two virtual CPU devices stand in for two GPUs."""
    code = ("import runpy, sys; sys.argv = [sys.argv[1], '--smoke']; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "import deeprestore.inversion.stack, deeprestore.restoration.models, deeprestore.descriptors.model; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    result = subprocess.run([sys.executable, "-c", code, str(SCRIPT)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "KERAS_BACKEND": "jax",
                                 "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result.returncode == 0, result.stderr[-2000:]
    check_figures(result.stdout)
    assert "devices cpu:0, cpu:1" in result.stdout
    parallel = re.search(r"DnCNN data-parallel over 2 devices \(batch 4\): (\d+) patches/s, ([\d.]+)x one device",
                         result.stdout)
    assert parallel and int(parallel.group(1)) > 0 and float(parallel.group(2)) > 0, result.stdout
    assert "peak device memory: unavailable on cpu" in result.stdout
