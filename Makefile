# Two commands every user gets: `make demo` and `make test`. Both create/refresh .venv and
# install everything they need, pinning torch through constraints.txt (a CPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
export PYTHONHASHSEED := 0

.PHONY: demo test test-slow venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(PIP) -q torch==2.13.0
	$(PIP) -q -e '.[train,cpu,video,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/daad demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Every test, with the slow ones (training to convergence, long soaks) `make test` leaves out.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m 'slow or not slow'

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
