"""Only for the cffi extension (kvcpu_dev.native._fuse); the rest of the
metadata is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["kvcpu_dev/native/build.py:ffibuilder"])
