# deeprestore: set-up, demo, tests and benchmarks. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test lint docs docs-install docs-linkcheck bench repro clean

install:
	$(PIP_INSTALL) -e ".[test,jax]"

demo: install
	deeprestore dream

# The suite runs on TEST_WORKERS processes (pytest-xdist), each test file in one worker so that its
# module fixtures are built once; most tests are short TensorFlow runs that leave a core idle.
TEST_WORKERS ?= 2

test: install
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile

# ruff.toml holds the rules; ruff is not among the test extras (`pip install ruff`).
lint:
	$(PYTHON) -m ruff check .

# The manual (docs/): Sphinx with warnings as errors, then docs/_build/html/index.html. Its figures are
# checked in; `$(PYTHON) docs/make_figures.py` remakes them (a few minutes on two cores).
SPHINX = $(PYTHON) -m sphinx -W --keep-going -q

docs-install:
	$(PIP_INSTALL) -e ".[docs]"

docs: docs-install
	$(SPHINX) -b html docs docs/_build/html

# Internal links only: conf.py's linkcheck_ignore skips every external address, and check_links.py
# checks every page's local links, images and anchors in the HTML that `make docs` built.
docs-linkcheck: docs
	$(SPHINX) -b linkcheck docs docs/_build/linkcheck
	$(PYTHON) docs/check_links.py docs/_build/html

bench: install
	$(PYTHON) benchmarks/bench_dream.py
	$(PYTHON) benchmarks/bench_style.py
	$(PYTHON) benchmarks/bench_hpatches.py
	$(PYTHON) benchmarks/bench_describe.py
	$(PYTHON) benchmarks/bench_denoise.py
	$(PYTHON) benchmarks/bench_stack.py
	$(PYTHON) benchmarks/bench_training.py

# Reproductions of the seeds' figures (experiments/repro/*.yaml): `make repro-seed003-layers`, `make repro`.
# SCALE=cpu (default, minutes each on bundled data) or SCALE=full with the weights and data it needs, e.g.
# `make repro-seed004-baseline SCALE=full HPATCHES=/data/n-hpatches`,
# `make repro-seed004-dncnn-paper SCALE=full IMAGES=/data/bsd400 TEST_IMAGES=/data/bsd68` (needs
# `pip install deeprestore[bm3d]`); `python3 experiments/repro.py --list`.
SCALE ?= cpu
REPRO_OUT ?= results/repro
REPRO_VARIABLES = VGG16 VGG19 ALEXNET CLASSIFIER IMAGES TEST_IMAGES HPATCHES STYLE
REPRO_SETTINGS = $(foreach variable,$(REPRO_VARIABLES),$(if $($(variable)),--set $(shell echo $(variable) | tr A-Z a-z)=$($(variable))))
REPRO = $(PYTHON) experiments/repro.py --scale $(SCALE) --out $(REPRO_OUT) $(REPRO_SETTINGS)

repro: install
	$(REPRO) all

repro-%: install
	$(REPRO) $*

clean:
	rm -rf build dist *.egg-info .pytest_cache results docs/_build
