"""The CDI spec ``kvcpu-dev --cdi`` writes, in-process: both transports'
specs valid against the CDI schema (tests/cdi_schema, vendored), the
names podman takes, and the file's life: written whole and 0644, removed
only when it names this device, a foreign one refused.  The spec in use
by podman: tests/test_podman.py; through a live daemon: tests/live/test_cdi.py."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import sys

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from kvcpu_dev.daemon import cdi
from kvcpu_dev.daemon.options import Options
from kvcpu_dev.errors import StartError

SCHEMA_DIR = pathlib.Path(__file__).parent / "cdi_schema"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((SCHEMA_DIR / "schema.json").read_text())
    defs = json.loads((SCHEMA_DIR / "defs.json").read_text())
    registry = Registry().with_resource("defs.json", Resource.from_contents(defs, default_specification=DRAFT7))
    return jsonschema.Draft7Validator(schema, registry=registry)


def opts(tmp_path: pathlib.Path, name: str = "kvcpu0") -> Options:
    return Options(name=name, run_dir=tmp_path / "run", dev_dir=tmp_path / "dev", cdi_dir=tmp_path / "cdi")


def test_the_fuse_spec_binds_the_device_file(validator, tmp_path):
    o = opts(tmp_path)
    spec = cdi.spec(o, "fuse")
    validator.validate(spec)
    assert spec == {
        "cdiVersion": "0.5.0", "kind": "kvcpu.dev/device",
        "devices": [{"name": "kvcpu0", "containerEdits": {
            "env": ["KVCPU_DEVICE=/dev/kvcpu0"],
            "mounts": [{"hostPath": str(tmp_path / "run" / "kvcpu0" / "device"), "containerPath": "/dev/kvcpu0",
                        "options": ["bind"]}]}}],
    }


def test_the_cuse_spec_names_the_character_device(validator, tmp_path):
    spec = cdi.spec(opts(tmp_path, "kv7"), "cuse", rdev=os.makedev(240, 3))
    validator.validate(spec)
    (device,) = spec["devices"]
    assert device["containerEdits"]["deviceNodes"] == [
        {"path": "/dev/kv7", "hostPath": "/dev/kv7", "type": "c", "permissions": "rw", "major": 240, "minor": 3}]
    assert "mounts" not in device["containerEdits"]


def test_the_schema_is_strict_enough_to_catch_a_bad_spec(validator, tmp_path):
    spec = cdi.spec(opts(tmp_path), "fuse")
    spec["devices"][0]["containerEdits"]["mounts"][0]["readonly"] = True  # not a CDI field
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(spec)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"cdiVersion": "0.5.0", "kind": "kvcpu.dev/device"})


@pytest.mark.parametrize("name", ["kvcpu0", "kvt12345", "a", "my-dev_1"])
def test_names_cdi_takes(name):
    cdi.check_name(name)
    assert cdi.qualified_name(name) == f"kvcpu.dev/device={name}"


@pytest.mark.parametrize("name", ["kv.0", "-kv", "kv-", "kv:0", "kv 0", "é"])
def test_names_cdi_refuses(name):
    with pytest.raises(StartError, match="not a CDI device name"):
        cdi.check_name(name)


def test_written_whole_0644_and_removed_only_when_ours(tmp_path):
    o = opts(tmp_path)
    old = os.umask(0o077)
    try:
        path = cdi.write(o, "fuse")
    finally:
        os.umask(old)
    assert path == tmp_path / "cdi" / "kvcpu.dev-kvcpu0.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == cdi.spec(o, "fuse")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    cdi.check(o)  # ours: no conflict
    other = opts(tmp_path / "elsewhere")  # same name, another run directory
    other.cdi_dir = o.cdi_dir
    with pytest.raises(StartError, match="exists and is not this device's"):
        cdi.check(other)
    assert cdi.remove(other) == [] and path.exists()  # not its to remove
    assert cdi.remove(o) == [path] and not path.exists()
    assert cdi.remove(o) == []


def test_a_cdi_directory_others_may_write_is_refused(tmp_path):
    o = opts(tmp_path)
    assert o.cdi_dir is not None
    o.cdi_dir.mkdir(mode=0o777)
    o.cdi_dir.chmod(0o777)
    with pytest.raises(StartError, match="group- or world-writable"):
        cdi.check(o)


def test_a_bad_name_is_refused_before_anything_starts(tmp_path):
    r = subprocess.run(["kvcpu-dev", "--mock", "--cdi-dir", str(tmp_path / "cdi"), "--name", "kv.0",
                        "--run-dir", str(tmp_path / "run")], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("kvcpu-dev: --cdi: 'kv.0' is not a CDI device name") and r.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "cdi").exists()
