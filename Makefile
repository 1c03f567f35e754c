# deeprestore: set-up, demo, tests and benchmarks. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test bench experiments-stack clean

install:
	$(PIP_INSTALL) -e ".[test,jax]"

demo: install
	deeprestore dream

test: install
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) benchmarks/bench_dream.py
	$(PYTHON) benchmarks/bench_style.py
	$(PYTHON) benchmarks/bench_hpatches.py
	$(PYTHON) benchmarks/bench_denoise.py
	$(PYTHON) benchmarks/bench_stack.py

experiments-stack: install
	$(PYTHON) experiments/stack_experiments.py all

clean:
	rm -rf build dist *.egg-info .pytest_cache
