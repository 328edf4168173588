"""Fixtures of the live suite: daemons torn down after their test, clients
closed after theirs, and the skip (or, with KVCPU_REQUIRE_LIVE, the error)
when this machine cannot run a daemon.  The harness itself is
``live.harness``; the spec's numbers are in ``kvspec``."""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest

from live.harness import (
    KVCTL,
    SCENARIOS,
    CClient,
    Client,
    Daemon,
    FcntlClient,
    KvCpuClient,
    KvctlClient,
    MakeDaemon,
    Op,
    cleanup_every_daemon,
    daemon_factory,
    installed,
    live_skip_reason,
)
from live.harness import (
    check_scenario as check_scenario_on,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = live_skip_reason()
    if reason and os.environ.get("KVCPU_REQUIRE_LIVE") and any("live" in i.keywords for i in items):
        raise pytest.UsageError(f"KVCPU_REQUIRE_LIVE is set but the live tests cannot run: {reason}")
    if reason:
        for item in items:
            if "live" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))


# -- daemons ----------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _sweep_daemons() -> Iterator[None]:
    """A safety net behind the per-test finalizers."""
    yield
    cleanup_every_daemon()


@pytest.fixture
def open_dir() -> Iterator[pathlib.Path]:
    """A directory ``nobody`` can traverse (pytest's are 0700 root).  Ask
    for it before ``daemons``, so that its daemons are gone when it goes."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="kvtopen-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["umount", "-l", "-R", str(path)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons(tmp_path: pathlib.Path) -> Iterator[MakeDaemon]:
    """``daemons(*args, base_dir=None, start=True)`` -> a Daemon on a fresh
    name, started with ``--mock --transport T *args``; torn down after the test."""
    with daemon_factory(tmp_path) as make:
        yield make


@pytest.fixture
def dev(daemons: MakeDaemon) -> Daemon:
    """A fresh daemon for this test alone."""
    return daemons()


@pytest.fixture
def traced_dev(daemons: MakeDaemon) -> Daemon:
    return daemons("--trace")


@pytest.fixture(scope="module")
def shared_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One --trace daemon for a module's table-driven cases.  Tests using it
    check relative to the state and log position at their start."""
    with daemon_factory(tmp_path_factory.mktemp("shared")) as make:
        yield make("--trace")


# -- clients ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kvctl() -> str:
    if not installed(KVCTL):
        pytest.skip("kvctl is not installed")
    probe = subprocess.run([KVCTL, "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"kvctl is not usable yet: {probe.stderr.strip().splitlines()[-1:]}")
    return KVCTL


@pytest.fixture
def kvclient(c_programs: dict[str, pathlib.Path]) -> pathlib.Path:
    return c_programs["kvclient"]


@pytest.fixture
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[[str, pathlib.Path], Client]]:
    """``make_client(kind, node)`` for kind "c", "fcntl", "kvcpu" or "kvctl";
    closed after the test."""
    made: list[Client] = []

    def make(kind: str, node: pathlib.Path) -> Client:
        if kind == "c":
            client: Client = CClient(node, request.getfixturevalue("c_programs")["kvclient"])
        elif kind == "fcntl":
            client = FcntlClient(node)
        elif kind == "kvcpu":
            client = KvCpuClient(node)
        elif kind == "kvctl":
            client = KvctlClient(node, request.getfixturevalue("kvctl"))
        else:
            raise ValueError(kind)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(request: pytest.FixtureRequest, make_client: Callable[[str, pathlib.Path], Client],
           shared_dev: Daemon) -> Client:
    """Parametrize indirectly with a client kind; it talks to ``shared_dev``."""
    return make_client(request.param, shared_dev.node)


@pytest.fixture
def check_scenario(shared_dev: Daemon) -> Callable[[Client, list[Op]], None]:
    """``check_scenario(client, ops)``: harness.check_scenario on ``shared_dev``."""
    return functools.partial(check_scenario_on, shared_dev)
