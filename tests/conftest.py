"""Shared by every test: repository paths and the C programs built with gcc."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
UAPI = REPO / "uapi"
C_SOURCES = TESTS / "c"


@pytest.fixture(scope="session")
def c_programs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Every tests/c/*.c, compiled against uapi/linux/kv_cpu.h as a client
    would compile it (gcc -I uapi).  Name -> executable."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C client and abi_dump cannot be built")
    out = tmp_path_factory.mktemp("cbin")
    built = {}
    for source in sorted(C_SOURCES.glob("*.c")):
        exe = out / source.stem
        cmd = [gcc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
               "-I", str(UAPI), "-o", str(exe), str(source)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{result.stderr}", pytrace=False)
        built[source.stem] = exe
    return built


@pytest.fixture(scope="session")
def uapi_header() -> pathlib.Path:
    return UAPI / "linux" / "kv_cpu.h"
