# taskrunner - the two commands a new user needs are `make demo` and `make test`.
# Both create .venv and install everything themselves.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORE_SRC := $(wildcard csrc/*.c csrc/*.h) taskrunner/native/_build.py
CORE_STAMP := build/.core-built

CC ?= cc
CTEST_DIR := build/ctest
CTEST_SRCS := $(wildcard csrc/tests/test_*.c)
CTEST_NAMES := $(patsubst csrc/tests/%.c,%,$(CTEST_SRCS))
CORE_C := $(wildcard csrc/*.c)
CWARN := -std=gnu11 -Wall -Wextra -Werror -g -O1 -pthread -Icsrc
ASAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
TSAN := -fsanitize=thread

.PHONY: all venv build test test-py test-parallel test-ft lint check-c demo bench bench-instructions clean pg-server chaos

all: test

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --upgrade 'setuptools>=77' wheel 'cffi>=2'
	$(PY) -m pip install -q -e '.[test,postgres,demo,plot,bench,dashboard]'
	touch $(STAMP)

venv: $(STAMP)

# Rebuild the extension in place whenever the C core changes.  This is the
# project's strict build (-Werror through TASKRUNNER_STRICT_BUILD); what
# `pip install` compiles for a user never turns warnings into errors.
$(CORE_STAMP): $(STAMP) $(CORE_SRC)
	TASKRUNNER_STRICT_BUILD=1 $(PY) setup.py -q build_ext --inplace --force
	mkdir -p build && touch $(CORE_STAMP)

build: $(CORE_STAMP)

lint: $(CORE_STAMP)
	$(VENV)/bin/ruff check taskrunner tests bench
	$(VENV)/bin/ruff format --check taskrunner tests bench
	$(VENV)/bin/mypy taskrunner

# The C drivers, each under AddressSanitizer+UBSan and separately ThreadSanitizer.
check-c:
	mkdir -p $(CTEST_DIR)
	set -e; for t in $(CTEST_NAMES); do \
	  $(CC) $(CWARN) $(ASAN) -o $(CTEST_DIR)/$$t.asan csrc/tests/$$t.c $(CORE_C); \
	  $(CC) $(CWARN) $(TSAN) -o $(CTEST_DIR)/$$t.tsan csrc/tests/$$t.c $(CORE_C); \
	  echo "== $$t (ASan+UBSan)"; ASAN_OPTIONS=detect_leaks=1 $(CTEST_DIR)/$$t.asan; \
	  echo "== $$t (TSan)"; TSAN_OPTIONS=halt_on_error=1 setarch $$(uname -m) -R $(CTEST_DIR)/$$t.tsan; \
	done

# The PostgreSQL tests start a throwaway cluster from Debian's server binaries.
pg-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql (the tests start a throwaway cluster)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }

.PHONY: chromium dashboard-screenshots

# The dashboard's browser tests drive Debian's headless Chromium (never a downloaded one).
chromium:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium and chromium-driver (the dashboard's browser tests)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    chromium chromium-driver; }

# The README's pictures of the dashboard, taken by its browser tests on SQLite.
dashboard-screenshots: $(CORE_STAMP) chromium
	TASKRUNNER_DASHBOARD_SCREENSHOTS=taskrunner/dashboard/docs $(PY) -m pytest -q -p no:randomly \
	  tests/test_dashboard_browser.py -k "sqlite and (overview_shows or hostile_text) or mounted_pool"

# The fault harness (tests/chaos): worker processes on one store, SIGKILL, SIGSTOP past
# the lease, a same-worker reclaim, PostgreSQL stopped mid-run and mid-commit, a full
# disk (a tmpfs; needs root), specialised workers; a ledger checked against the store.
# A few minutes; `make test` runs a short version (tests/test_chaos.py).
CHAOS_SECONDS ?= 90
CHAOS_JOBS ?= 500
chaos: $(CORE_STAMP) pg-server
	$(PY) tests/chaos/run.py --store both --seconds $(CHAOS_SECONDS) --jobs $(CHAOS_JOBS)

test-py: $(CORE_STAMP) pg-server chromium
	$(PY) -m pytest -q

# The suite again with every test run by 4 threads at once (pytest-run-parallel).
test-parallel: $(CORE_STAMP) pg-server chromium
	$(PY) -m pytest -q -p no:randomly --parallel-threads=4 -m "not slow"

# The whole suite under a free-threaded interpreter, when one is found
# (python3.14t on PATH, or PYTHON_FT=path): serially, then 4 threads per test.
# The GIL is left to the interpreter (no PYTHON_GIL=0): an extension that turns it
# back on must show up, and tests/test_free_threading.py checks that none does.
test-ft: pg-server chromium
	@ft="$${PYTHON_FT:-$$(command -v python3.14t || true)}"; \
	if [ -z "$$ft" ]; then \
	  echo "test-ft: no free-threaded interpreter found (python3.14t on PATH, or PYTHON_FT=path); skipped"; \
	  exit 0; \
	fi; \
	if [ "$$("$$ft" -c 'import sysconfig; print(bool(sysconfig.get_config_var("Py_GIL_DISABLED")))')" != True ]; then \
	  echo "test-ft: $$ft is not a free-threaded build (Py_GIL_DISABLED unset)"; exit 1; \
	fi; \
	echo "test-ft: using $$ft"; \
	set -e; \
	test -x .venv-ft/bin/python || "$$ft" -m venv .venv-ft; \
	.venv-ft/bin/python -m pip install -q --upgrade pip setuptools wheel 'cffi>=2'; \
	.venv-ft/bin/python -m pip install -q -e '.[test]'; \
	.venv-ft/bin/python -m pip install -q -e '.[postgres-pure,plot]'; \
	TASKRUNNER_STRICT_BUILD=1 .venv-ft/bin/python setup.py -q build_ext --inplace --force; \
	.venv-ft/bin/python -c 'import sys, taskrunner, psycopg; assert not sys._is_gil_enabled(), "the GIL came back on"; print("test-ft: GIL off, psycopg", psycopg.pq.__impl__)'; \
	.venv-ft/bin/python -m pytest -q; \
	.venv-ft/bin/python -m pytest -q -p no:randomly --parallel-threads=4 -m "not slow"

test: lint check-c test-py test-parallel test-ft

# The demo keeps its store in build/demo.db, for the dashboard it names at its end.
demo: $(CORE_STAMP)
	$(PY) -m taskrunner demo --db build/demo.db --overwrite

bench: $(CORE_STAMP)
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,mean,ops -p no:cacheprovider
	set -e; for s in bench/*.py; do case $$s in bench/test_*|bench/conftest.py|bench/_*) ;; *) echo "== $$s"; $(PY) $$s;; esac; done

# Instructions per no-op task under callgrind: the hot-path metric noise cannot move.
bench-instructions: $(CORE_STAMP)
	$(PY) bench/instructions.py

clean:
	rm -rf build $(VENV) .venv-ft *.egg-info taskrunner/native/_core*.so taskrunner/native/_core.c taskrunner/native/_core.o \
	  .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
