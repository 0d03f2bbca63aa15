"""cffi build script for the C core (API mode, out-of-line).

``setup.py`` names ``taskrunner/native/_build.py:ffibuilder`` in ``cffi_modules``;
the result is the extension module ``taskrunner.native._core`` (``ffi`` and ``lib``).

The cdef is read from the declaration-only public headers in ``csrc/`` with
their preprocessor lines dropped, so the C declarations live in one place.
On a free-threaded interpreter the limited API is switched off: cffi>=2
supports free threading only with the full API.
"""

from __future__ import annotations

import os
import pathlib
import sysconfig

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"

# (public header, source) in dependency order.
UNITS = (
    ("tr_common.h", "tr_common.c"),
    ("tr_heap.h", "tr_heap.c"),
    ("tr_wheel.h", "tr_wheel.c"),
    ("tr_ring.h", "tr_ring.c"),
)

CFLAGS = ["-O2", "-Wall", "-Wextra", "-std=gnu11", "-pthread"]

# What ``pip install`` compiles must never fail on a warning that a user's
# compiler emits and ours did not, so ``-Werror`` is opt-in: the project's own
# strict build (``make build-strict``, run by ``make test``) sets this variable.
STRICT_ENV = "TASKRUNNER_STRICT_BUILD"


def _cdef_text(header: pathlib.Path) -> str:
    """The header without preprocessor lines (cdef accepts only declarations)."""
    lines = header.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _constants() -> str:
    return "#define TR_HEAP_LEVELS 8\n"


def _compile_args(free_threaded: bool) -> list[str]:
    """CFLAGS, plus ``-Werror`` when the strict build asks for it.

    On a free-threaded interpreter cffi both passes ``-D_CFFI_NO_LIMITED_API``
    and writes ``#define _CFFI_NO_LIMITED_API`` at the top of the generated
    file, which GCC reports as a redefinition (a warning no flag silences).
    The strict build cancels the command-line definition with ``-U`` (it comes
    after cffi's ``-D``), so the file's own ``#define`` is the only one and the
    result is the same.  A user's build keeps cffi's flags as they are: the
    warning is harmless there.
    """
    strict = os.environ.get(STRICT_ENV, "") not in ("", "0")
    if not strict:
        return list(CFLAGS)
    return [*CFLAGS, "-Werror", *(["-U_CFFI_NO_LIMITED_API"] if free_threaded else [])]


def build_ffi() -> FFI:
    ffi = FFI()
    ffi.cdef(_constants() + "\n".join(_cdef_text(CSRC / h) for h, _ in UNITS))
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    includes = "\n".join(f'#include "{h}"' for h, _ in UNITS)
    ffi.set_source(
        "taskrunner.native._core",
        includes,
        sources=[str((CSRC / c).relative_to(ROOT)) for _, c in UNITS],
        include_dirs=[str(CSRC.relative_to(ROOT))],
        extra_compile_args=_compile_args(free_threaded),
        extra_link_args=["-pthread"],
        py_limited_api=not free_threaded,
    )
    return ffi


ffibuilder = build_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
