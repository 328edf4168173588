"""Shared by every test: repository paths, the C programs built with gcc,
and the container tests' Debian rootfs."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

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


@pytest.fixture(scope="session")
def rootfs_cache() -> Iterator[pathlib.Path]:
    """Where scripts/docker-image.sh keeps the Debian rootfs tarball it
    builds (KVCPU_ROOTFS_CACHE), so that the Docker and the podman test
    build it once between them (mmdebstrap: a minute or two, ~470 MB);
    removed at the session's end."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="kvcpu-rootfs-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
