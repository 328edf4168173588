"""Only for the cffi extension (kvcpu_dev.native._fuse); the rest of the
metadata is in pyproject.toml."""

from setuptools import setup

setup(
    cffi_modules=["kvcpu_dev/native/build.py:ffibuilder"],
    # cffi builds the extension against the stable ABI (_fuse.abi3.so): one
    # wheel for every CPython from 3.11 on, tagged so.
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
