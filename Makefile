# The two commands of the README: `make run` and `make test` (CI adds `make test-e2e`).
VENV ?= .venv
PY := $(VENV)/bin/python
PLANT := $(VENV)/bin/plant
PYTHON ?= python3

.PHONY: install lock run test test-e2e lint bench screenshots clean

# The exact versions of requirements.lock (hash-checked), then the project itself without
# resolving anything again: every install of a commit gets the same libraries.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Re-resolve requirements.lock from pyproject.toml (runtime + dev extras) with pip-tools,
# keeping the pins that still fit; `make lock LOCK_FLAGS=--upgrade` takes the newest releases.
lock:
	test -x $(VENV)/bin/pip-compile || $(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile -q --generate-hashes --extra dev --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(LOCK_FLAGS) -o requirements.lock pyproject.toml

run: install
	$(PLANT) db upgrade
	$(PLANT) run --simulate

# The default run (under 10 minutes) leaves out the end-to-end tests (marker e2e: `plant run`
# and `plant bench` as separate processes, SIGKILL and restart, two lines on one PostgreSQL) and
# the slow ones (marker slow: model training, long runs); CI runs both.
test: install
	$(VENV)/bin/pytest -q -m "not e2e and not slow" --durations=15

test-e2e: install
	$(VENV)/bin/pytest -q -m "e2e or slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy plant drivers models hmi tests

bench: install
	$(PLANT) bench

# The HMI screenshots of README.md and docs/hmi.md, taken in headless Chromium by the tests.
screenshots: install
	PLANT_SCREENSHOTS=$(CURDIR)/docs/screenshots $(VENV)/bin/pytest -q tests/test_hmi_browser.py tests/test_hmi_live.py tests/test_hmi_shift.py

clean:
	rm -rf $(VENV) var .pytest_cache
