# taskrunner - the two commands a new user needs are `make demo` and `make test`.
# Both create .venv and install everything themselves.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORE_SRC := $(wildcard csrc/*.c csrc/*.h) taskrunner/_ffi_build.py
CORE_STAMP := build/.core-built

CC ?= cc
CTEST_DIR := build/ctest
CTEST_SRCS := $(wildcard csrc/tests/test_*.c)
CTEST_NAMES := $(patsubst csrc/tests/%.c,%,$(CTEST_SRCS))
CORE_C := $(wildcard csrc/*.c)
CWARN := -std=gnu11 -Wall -Wextra -Werror -g -O1 -pthread -Icsrc
ASAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
TSAN := -fsanitize=thread

.PHONY: all venv build test test-py test-parallel test-ft lint check-c demo bench clean

all: test

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo]'
	touch $(STAMP)

venv: $(STAMP)

# Rebuild the extension in place whenever the C core changes.
$(CORE_STAMP): $(STAMP) $(CORE_SRC)
	$(PY) setup.py -q build_ext --inplace
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

test-py: $(CORE_STAMP)
	$(PY) -m pytest -q

# The suite again with every test run by 4 threads at once (pytest-run-parallel).
test-parallel: $(CORE_STAMP)
	$(PY) -m pytest -q -p no:randomly --parallel-threads=4 -m "not slow"

# The whole suite under a free-threaded interpreter, when one is found.
test-ft:
	@ft="$${PYTHON_FT:-$$(command -v python3.14t || true)}"; \
	if [ -z "$$ft" ]; then echo "test-ft: no free-threaded interpreter found (python3.14t on PATH or PYTHON_FT=path); skipped"; exit 0; fi; \
	echo "test-ft: using $$ft"; \
	test -x .venv-ft/bin/python || "$$ft" -m venv .venv-ft; \
	.venv-ft/bin/python -m pip install -q -e '.[test]' && \
	PYTHON_GIL=0 .venv-ft/bin/python -m pytest -q

test: lint check-c test-py test-parallel test-ft

demo: $(CORE_STAMP)
	$(PY) -m taskrunner demo

bench: $(CORE_STAMP)
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,mean,ops -p no:cacheprovider
	set -e; for s in bench/*.py; do case $$s in bench/test_*|bench/conftest.py|bench/_*) ;; *) echo "== $$s"; $(PY) $$s;; esac; done

clean:
	rm -rf build $(VENV) .venv-ft *.egg-info taskrunner/_core*.so taskrunner/_core.c taskrunner/_core.o \
	  .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
