"""Builds the C core (csrc/) into taskrunner.native._core through cffi's cffi_modules.

All metadata lives in pyproject.toml; this file exists only because
``cffi_modules`` is a setup() keyword.
"""

from setuptools import setup

setup(cffi_modules=["taskrunner/native/_build.py:ffibuilder"])
