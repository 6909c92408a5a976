# Two commands on a fresh machine: `make demo` and `make test` (README.md).
# Both bootstrap .venv from requirements.lock (python3.10) the first time, then reuse it.
# The lock holds the whole stack, Airflow 2.x included (README "Three ways to run").

VENV := .venv
STAMP := $(VENV)/.installed
# python3.10 from PATH, pyenv or the system, whichever actually runs 3.10.
PY310 := $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10 \
	/usr/local/bin/python3.10 /usr/bin/python3.10; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && echo $$p && break; done)
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
# pytest-xdist workers for make test (the CI machine has 2 cores); each test module stays on
# one worker, so a module's pipeline-run fixture runs once. Modules go out in collection
# order, which tests/conftest.py makes slowest first (xdist's default reorder would put the
# modules with the fewest tests, the pipeline runs among them, last).
TEST_WORKERS ?= 2
EXPERIMENT ?= default
# uv installs the lock: the same packages as pip (pip freeze of both venvs differs by uv
# only), in less than half pip's time from an empty cache. pip stays in the venv.
UV_VERSION := 0.13.9
# uv reads no pip.conf and no PIP_* variables: a machine whose packages come from a mirror,
# a wheel folder or a private CA would install pip and uv from there and then have uv go to
# PyPI. `make uv-flags` prints pip's effective settings (PIP_* over the `install` section
# over `global`, as pip ranks them) as uv flags; with several indexes, uv picks the best
# match across them as pip does (uv's default stops at the first index holding a name).
define UV_FLAGS_FROM_PIP
import ast, shlex, subprocess, sys
listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=True,
                         capture_output=True, text=True).stdout
rank = {"global": 0, "install": 1, ":env:": 2}
settings = {}
for line in listing.splitlines():
    key, _, value = line.partition("=")
    section, _, name = key.rpartition(".")
    if section in rank and rank[section] >= settings.get(name, (-1, ""))[0]:
        settings[name] = (rank[section], ast.literal_eval(value))
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
         "find-links": "--find-links", "cert": "--cert", "constraint": "--constraints"}
args = [arg for name, flag in flags.items() if name in settings
        for value in settings[name][1].split() for arg in (flag, value)]
if "extra-index-url" in settings:
    args += ["--index-strategy", "unsafe-best-match"]
print(shlex.join(args))
endef
export UV_FLAGS_FROM_PIP

.PHONY: demo test install lock clean test-packages uv-flags airflow-scheduler docker-tiny

install: $(STAMP)

$(STAMP): requirements.lock setup.py
	@test -n "$(PY310)" || { echo "python3.10 not found (needed: see README)"; exit 1; }
	@echo "==> creating $(VENV) with $(PY310) and installing the locked stack (about 4 minutes)"
	test -x $(PYTHON) || $(PY310) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade "pip==24.2" "setuptools==69.5.1" "wheel==0.44.0" \
	  "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install --quiet --python $(PYTHON) --compile-bytecode \
	  $$($(PYTHON) -c "$$UV_FLAGS_FROM_PIP") -r requirements.lock
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

uv-flags:
	@$(or $(wildcard $(PYTHON)),$(PY310)) -c "$$UV_FLAGS_FROM_PIP"

demo: $(STAMP)
	$(VENV)/bin/hyperrec demo --experiment $(EXPERIMENT)

# The venv and the Debian packages are independent: the two installs overlap (-j2).
test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) test-packages
	$(PYTHON) -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Debian packages the tests start, installed where missing (root or sudo) with one apt-get
# update: mariadb-server (MLMD) and postgresql (Airflow's metadata database) for the Airflow
# scheduler test (tests/test_airflow_scheduler.py runs their binaries on loopback ports) and
# headless chromium for the run report's browser test (tests/test_report.py).
test-packages:
	@PACKAGES=""; \
	command -v mariadbd >/dev/null 2>&1 || PACKAGES="$$PACKAGES mariadb-server mariadb-client"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || PACKAGES="$$PACKAGES postgresql"; \
	command -v chromium >/dev/null 2>&1 || PACKAGES="$$PACKAGES chromium"; \
	[ -z "$$PACKAGES" ] || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "==> installing Debian's$$PACKAGES for the tests (about 1-3 minutes, once)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $$PACKAGES >/dev/null; }

# Airflow for real, alone (it is also part of `make test`): `airflow scheduler` with
# LocalExecutor, metadata in PostgreSQL, MLMD in MariaDB, both on loopback ports; the
# monitor's Airflow trigger starts the tiny DAG, one task is killed midway and retried, and
# the test reads the task states, the pushed model and its lineage.
airflow-scheduler:
	@$(MAKE) --no-print-directory -j2 $(STAMP) test-packages
	$(PYTHON) -m pytest tests/test_airflow_scheduler.py $(PYTEST_ARGS)

# The pipeline image (Dockerfile) and the tiny pipeline run inside it, where a docker daemon
# answers; elsewhere one line says that nothing was built or run.
docker-tiny:
	@if docker info >/dev/null 2>&1; then \
	  set -x; docker build -t hyperrec:local . && \
	  docker run --rm --entrypoint hyperrec hyperrec:local demo --experiment tiny; \
	else echo "docker-tiny: no docker daemon answers here (docker info failed): the image was" \
	  "not built and nothing ran in it"; fi

# Re-resolve the lock from the top-level pins (needs the package registry).
lock:
	rm -rf .venv-lock && $(PY310) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet "pip==24.2" "setuptools==69.5.1" "wheel==0.44.0"
	.venv-lock/bin/pip install --quiet -r requirements.in
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^hyperrec' > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) runs .pytest_cache
