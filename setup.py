"""Only for the cffi extensions (kvcpu_dev.native._fuse, the fast path, and
kvcpu_dev.model._hints, the model's hint doorbells) and the license;
the rest of the metadata is in pyproject.toml."""

import setuptools
from setuptools import setup
from setuptools.command.build_py import build_py

BUILD_SCRIPTS = {("kvcpu_dev.native", "build"), ("kvcpu_dev.model", "hints_build")}


class BuildPy(build_py):
    """The build scripts make the extensions at build time; an installed
    package has no use for them (the sdist keeps them: MANIFEST.in)."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) not in BUILD_SCRIPTS]


#: MIT, in the form the building setuptools reads without a warning: an
#: SPDX expression from 77 on (which deprecates the old field), the plain
#: field before (Debian bookworm's 66, which the offline container build
#: uses, rejects the expression).  pyproject.toml lists it as dynamic.
LICENSE = {"license_expression": "MIT"} if int(setuptools.__version__.split(".")[0]) >= 77 else {"license": "MIT"}

setup(
    cffi_modules=["kvcpu_dev/native/build.py:ffibuilder", "kvcpu_dev/model/hints_build.py:ffibuilder"],
    cmdclass={"build_py": BuildPy},
    # cffi builds the extension against the stable ABI (_fuse.abi3.so): one
    # wheel for every CPython from 3.11 on, tagged so.
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
    **LICENSE,
)
