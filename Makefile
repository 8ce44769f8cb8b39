# Two commands every user gets: `make demo` and `make test`. Both create/refresh .venv and
# install everything they need, pinning torch through constraints.txt (a CPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt
export PYTHONHASHSEED := 0

.PHONY: demo test test-slow venv clean browser console-screenshots system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(PIP) -q torch==2.13.0
	$(PIP) -q -e '.[train,backbones,cpu,video,console,plant,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/daad demo

test: $(STAMP) browser system-deps
	$(BIN)/python -m pytest

# Headless Chromium and its driver for the console's browser tests, from Debian (never a
# downloaded browser build). A no-op when both are present; without apt-get as root it says so
# and the browser tests skip with that reason.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver; } || \
	    echo "make: could not install chromium: the console's browser tests will skip"; \
	else echo "make: chromium/chromedriver missing and no apt-get as root: the console's browser tests will skip"; fi

# docs/CONSOLE.md's pictures: the browser test, keeping a screenshot of each page.
console-screenshots: $(STAMP) browser
	DAAD_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_console_browser.py

# Every test, with the slow ones (training to convergence, long soaks) `make test` leaves out.
test-slow: $(STAMP) browser system-deps
	$(BIN)/python -m pytest -m 'slow or not slow'

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The MQTT tests run against a real broker: install Debian's mosquitto when it is missing and apt
# can (root); otherwise say so and go on (those tests then skip, naming this step).
MOSQUITTO := $(shell PATH="$$PATH:/usr/sbin" command -v mosquitto)
system-deps:
ifeq ($(MOSQUITTO),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq mosquitto; } \
			|| echo "make system-deps: could not install mosquitto: the MQTT tests will skip"; \
	else \
		echo "make system-deps: mosquitto is missing and apt-get cannot run here (not root or no apt): the MQTT tests will skip"; \
	fi
endif
