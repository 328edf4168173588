"""kvcpu_dev.device.abi against gcc's reading of uapi/linux/kv_cpu.h, and both
against the numbers the spec states literally."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys

import pytest

from kvcpu_dev.device import abi

#: The spec's table, verbatim: name -> (number, payload struct, size).
SPEC_COMMANDS = {
    "KV_CPU_STEP_ADVANCE": (0x40084B01, "kv_cpu_step_info", 8),
    "KV_CPU_MARK_HOT": (0x40184B02, "kv_cpu_block_info", 24),
    "KV_CPU_EVICT": (0x40184B03, "kv_cpu_block_info", 24),
    "KV_CPU_PREFETCH": (0x40184B04, "kv_cpu_block_info", 24),
    "KV_CPU_SHARE_PREFIX": (0x40184B05, "kv_cpu_block_info", 24),
    "KV_CPU_SET_WEIGHTS": (0x40184B06, "kv_cpu_weights_info", 24),
    "KV_CPU_GET_TELEMETRY": (0x80604B07, "kv_cpu_telemetry_info", 96),
}

_U64 = ("current_step", "step_count", "hot_count", "evict_count", "prefetch_count",
        "share_count", "last_va", "last_len", "last_target_step")
_WEIGHTS = ("w_r", "w_f", "w_s", "w_d", "evict_thresh", "prefetch_thresh")

#: The spec's structs: fields in order with their widths (natural alignment).
SPEC_STRUCTS = {
    "kv_cpu_step_info": [("step", 8)],
    "kv_cpu_block_info": [("va", 8), ("len", 8), ("target_step", 8)],
    "kv_cpu_weights_info": [(f, 4) for f in _WEIGHTS],
    "kv_cpu_telemetry_info": [(f, 8) for f in _U64] + [(f, 4) for f in _WEIGHTS],
}


class CAbi:
    """The facts abi_dump printed."""

    def __init__(self, text: str):
        self.ioctls: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, dict[str, int]] = collections.defaultdict(dict)
        self.field_sizes: dict[str, dict[str, int]] = collections.defaultdict(dict)
        self.ioc: dict[str, int] = {}
        for line in text.splitlines():
            kind, *rest = line.split()
            if kind == "magic":
                self.magic = int(rest[0])
            elif kind == "ioctl":
                self.ioctls[rest[0]] = int(rest[1])
            elif kind == "sizeof":
                self.sizes[rest[0]] = int(rest[1])
            elif kind == "offsetof":
                self.offsets[rest[0]][rest[1]] = int(rest[2])
            elif kind == "fieldsize":
                self.field_sizes[rest[0]][rest[1]] = int(rest[2])
            elif kind == "ioc":
                self.ioc[rest[0]] = int(rest[1])
            else:
                raise AssertionError(f"abi_dump printed an unknown line: {line!r}")


@pytest.fixture(scope="module")
def c_abi(c_programs) -> CAbi:
    out = subprocess.run([c_programs["abi_dump"]], capture_output=True, text=True, check=True)
    return CAbi(out.stdout)


# -- Python (kvcpu_dev.device.abi) == C (gcc) ---------------------------------------


def test_magic(c_abi):
    assert c_abi.magic == abi.MAGIC == ord("K")


def test_same_commands(c_abi):
    assert set(abi.COMMANDS) == set(c_abi.ioctls)


@pytest.mark.parametrize("name", sorted(SPEC_COMMANDS))
def test_ioctl_number_matches_c(c_abi, name):
    assert abi.COMMANDS[name].number == c_abi.ioctls[name]


def test_same_structs(c_abi):
    assert set(abi.LAYOUTS) == set(c_abi.sizes) == set(SPEC_STRUCTS)


@pytest.mark.parametrize("struct_name", sorted(SPEC_STRUCTS))
def test_layout_matches_c(c_abi, struct_name):
    layout = abi.LAYOUTS[struct_name]
    assert layout.size == layout.codec.size == c_abi.sizes[struct_name]
    assert list(layout.fields) == list(c_abi.offsets[struct_name])  # same names, same order
    assert dict(zip(layout.fields, layout.offsets)) == c_abi.offsets[struct_name]


@pytest.mark.parametrize("struct_name", sorted(SPEC_STRUCTS))
def test_codec_places_each_field_where_c_does(c_abi, struct_name):
    """Pack distinct values and read each back at gcc's offset and width."""
    layout = abi.LAYOUTS[struct_name]
    values = [0x0102030405060708 + i if c_abi.field_sizes[struct_name][f] == 8 else 0x11223340 + i
              for i, f in enumerate(layout.fields)]
    packed = layout.codec.pack(*values)
    for field, value in zip(layout.fields, values):
        offset = c_abi.offsets[struct_name][field]
        width = c_abi.field_sizes[struct_name][field]
        assert int.from_bytes(packed[offset : offset + width], "little") == value, field


@pytest.mark.parametrize("label", ["_IO:75:127:0", "_IOW:75:8:8", "_IOR:75:7:8",
                                   "_IOWR:75:7:96", "_IOW:76:1:8", "_IOR:75:255:16383"])
def test_ioc_encoding_matches_the_kernel_macros(c_abi, label):
    macro, type_, nr, size = label.split(":")
    direction = {"_IO": abi.IOC_NONE, "_IOW": abi.IOC_WRITE, "_IOR": abi.IOC_READ,
                 "_IOWR": abi.IOC_READ | abi.IOC_WRITE}[macro]
    number = abi.ioc(direction, int(type_), int(nr), int(size))
    assert number == c_abi.ioc[label]
    assert abi.ioc_size(number) == int(size)
    assert abi.ioc_dir(number) == direction


# -- both == the spec, literally ---------------------------------------------


@pytest.mark.parametrize("name", sorted(SPEC_COMMANDS))
def test_spec_numbers(c_abi, name):
    number, struct_name, size = SPEC_COMMANDS[name]
    command = abi.COMMANDS[name]
    assert c_abi.ioctls[name] == number
    assert command.number == number
    assert command.layout.name == struct_name
    assert command.layout.size == size == c_abi.sizes[struct_name]
    assert abi.ioc_size(number) == size
    assert abi.BY_NUMBER[number] is command


def test_module_constants_are_the_spec_numbers():
    assert (abi.KV_CPU_STEP_ADVANCE, abi.KV_CPU_MARK_HOT, abi.KV_CPU_EVICT, abi.KV_CPU_PREFETCH,
            abi.KV_CPU_SHARE_PREFIX, abi.KV_CPU_SET_WEIGHTS, abi.KV_CPU_GET_TELEMETRY) == (
        0x40084B01, 0x40184B02, 0x40184B03, 0x40184B04, 0x40184B05, 0x40184B06, 0x80604B07)


@pytest.mark.parametrize("struct_name", sorted(SPEC_STRUCTS))
def test_spec_layouts(c_abi, struct_name):
    offset, expected = 0, {}
    for field, width in SPEC_STRUCTS[struct_name]:
        expected[field] = offset
        assert c_abi.field_sizes[struct_name][field] == width
        offset += width
    assert c_abi.offsets[struct_name] == expected
    assert c_abi.sizes[struct_name] == offset  # no padding anywhere
    assert abi.LAYOUTS[struct_name].codec.format.startswith("<")  # little-endian


def test_field_name_tuples():
    assert abi.WEIGHT_FIELDS == _WEIGHTS
    assert abi.TELEMETRY_FIELDS == _U64 + _WEIGHTS


def test_header_names(c_abi):
    text = abi.HEADER.read_text()
    for needle in ("#ifndef _UAPI_LINUX_KV_CPU_H", "#define _UAPI_LINUX_KV_CPU_H",
                   "#include <linux/types.h>", "#include <linux/ioctl.h>",
                   "#define KV_CPU_MAGIC 'K'"):
        assert needle in text


def test_python_reads_the_header_gcc_compiles(uapi_header):
    assert abi.HEADER.read_bytes() == uapi_header.read_bytes()


# -- the reader on headers other than ours -------------------------------------

#: Members that need padding before them and after the last one.
PADDED = """\
#include <linux/types.h>
#define KV_CPU_MAGIC 'K'
struct kv_cpu_padded {
	__u8 flag;   /* 7 bytes of padding follow */
	__u64 va;
	__u16 nr;
	__u32 len;   /* then 0; 2 before, 0 after; tail padding to 8 */
	__u8 last;
};
#define KV_CPU_PADDED _IOW(KV_CPU_MAGIC, 0x09, struct kv_cpu_padded)
"""


def test_padding_where_gcc_puts_it(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    header = tmp_path / "padded.h"
    header.write_text(PADDED)
    fields = ("flag", "va", "nr", "len", "last")
    program = tmp_path / "padded.c"
    program.write_text(
        '#include <stddef.h>\n#include <stdio.h>\n#include "padded.h"\nint main(void) {\n'
        + "".join(f'\tprintf("%zu\\n", offsetof(struct kv_cpu_padded, {f}));\n' for f in fields)
        + '\tprintf("%zu\\n", sizeof(struct kv_cpu_padded));\n\treturn 0;\n}\n')
    subprocess.run([gcc, "-o", str(tmp_path / "padded"), str(program)], check=True)
    out = subprocess.run([tmp_path / "padded"], capture_output=True, text=True, check=True).stdout
    *offsets, size = map(int, out.split())

    _magic, layouts, commands = abi.load(header)
    layout = layouts["kv_cpu_padded"]
    assert layout.fields == fields
    assert list(layout.offsets) == offsets
    assert layout.size == layout.codec.size == size > sum((1, 8, 2, 4, 1))
    packed = layout.codec.pack(1, 2, 3, 4, 5)
    assert [packed[o] for o in offsets] == [1, 2, 3, 4, 5]  # little-endian: the low byte first
    assert commands["KV_CPU_PADDED"].number == abi.ioc(abi.IOC_WRITE, ord("K"), 9, size)


@pytest.mark.parametrize("member", ["__u8 pad[4];", "__u64 a, b;", "char *name;", "__s32 delta;",
                                    "struct kv_cpu_step_info inner;", "__u32 bits : 3;"])
def test_a_member_it_cannot_read_is_an_error(tmp_path, member):
    header = tmp_path / "odd.h"
    header.write_text(f"#define KV_CPU_MAGIC 'K'\nstruct kv_cpu_odd {{\n\t__u64 va;\n\t{member}\n}};\n")
    with pytest.raises(ValueError, match="struct kv_cpu_odd: cannot read"):
        abi.load(header)


def test_reading_the_header_needs_no_cffi():
    """kvctl imports this module on every run, and cffi's C parser cost ~25 ms."""
    code = "import sys, kvcpu_dev.device.abi; print('cffi' in sys.modules, 'pycparser' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
