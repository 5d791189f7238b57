# Slicewise: `make run` opens the viewer on the bundled demo study; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
APP_STAMP := $(VENV)/.stamp-app
DEV_STAMP := $(VENV)/.stamp-dev

.PHONY: run test lint typecheck pytest bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(APP_STAMP): pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

# torch==2.13.0 first: a CPU build lies on this machine's disk, so the `training` extra installs nothing more.
$(DEV_STAMP): pyproject.toml | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,training]'
	touch $@ $(APP_STAMP)

run: $(APP_STAMP)
	$(VENV)/bin/slicewise --demo

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check viewer training tests benchmarks
	$(VENV)/bin/lint-imports

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy

pytest: $(DEV_STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

test: lint typecheck pytest

bench: $(DEV_STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) benchmarks/bench_load.py
	QT_QPA_PLATFORM=offscreen $(PY) benchmarks/bench_scroll.py
	QT_QPA_PLATFORM=offscreen $(PY) benchmarks/bench_infer.py
	$(PY) benchmarks/bench_review_hwm.py
	$(PY) benchmarks/bench_mpr.py
	QT_QPA_PLATFORM=offscreen $(PY) benchmarks/bench_mpr_view.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
