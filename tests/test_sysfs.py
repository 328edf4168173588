"""kstrtoull/kstrtou32 as the kernel parses sysfs writes (lib/kstrtox.c):
optional '+', base prefix for base 0 ("0x" + a hex digit -> 16, a leading
"0" -> 8, else 10), digits, at most one trailing newline, nothing else;
overflow is ERANGE (checked before trailing junk), no digits or junk EINVAL."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcpu_dev.device.regs import U32 as U32_MAX
from kvcpu_dev.device.regs import U64 as U64_MAX
from kvcpu_dev.device.sysfs import Attribute, kstrtou32, kstrtoull

VALID = [
    (b"0", 0),
    (b"5", 5),
    (b"5\n", 5),
    (b"+7", 7),
    (b"+7\n", 7),
    (b"0x1f", 31),
    (b"0X1F", 31),
    (b"0xAbC\n", 0xABC),
    (b"+0x10", 16),
    (b"010", 8),  # leading 0: octal
    (b"0777", 0o777),
    (b"00", 0),
    (b"0\n", 0),
    (b"4294967295", U32_MAX),
    (b"0xffffffff", U32_MAX),
    (b"037777777777", U32_MAX),
    (b"000000000000000000000000000001", 1),  # leading zeros are not overflow
    (b"7\0junk", 7),  # the store sees a C string
]

EINVAL = [
    b"",
    b"\n",
    b" 5",
    b"5 ",
    b"5\n\n",
    b"\n5",
    b"-1",
    b"-0",
    b"++1",
    b"+",
    b"abc",
    b"1a",
    b"0x",  # "0x" without a hex digit: octal 0, then junk 'x'
    b"0xg",
    b"08",  # octal has no 8
    b"09",
    b"1.5",
    b"1e3",
    b"0b101",
    b"5\r\n",
    b"\t5",
]

ERANGE = [
    b"4294967296",
    b"0x100000000",
    b"040000000000",
    b"18446744073709551615",  # fits kstrtoull, not u32
    b"18446744073709551616",
    b"99999999999999999999999",
    b"0x10000000000000000",
    b"99999999999999999999999x",  # overflow wins over trailing junk
]


@pytest.mark.parametrize("text, value", VALID, ids=repr)
def test_kstrtou32_accepts(text, value):
    assert kstrtou32(text) == value


@pytest.mark.parametrize("text", EINVAL, ids=repr)
def test_kstrtou32_einval(text):
    with pytest.raises(OSError) as exc:
        kstrtou32(text)
    assert exc.value.errno == errno.EINVAL


@pytest.mark.parametrize("text", ERANGE, ids=repr)
def test_kstrtou32_erange(text):
    with pytest.raises(OSError) as exc:
        kstrtou32(text)
    assert exc.value.errno == errno.ERANGE


@pytest.mark.parametrize("text, value", [
    (b"18446744073709551615", U64_MAX),
    (b"0xffffffffffffffff", U64_MAX),
    (b"01777777777777777777777", U64_MAX),
])
def test_kstrtoull_u64_max(text, value):
    assert kstrtoull(text) == value


@pytest.mark.parametrize("text", [b"18446744073709551616", b"0x10000000000000000"])
def test_kstrtoull_overflow(text):
    with pytest.raises(OSError) as exc:
        kstrtoull(text)
    assert exc.value.errno == errno.ERANGE


@pytest.mark.parametrize("text, base, value", [
    (b"ff", 16, 255),
    (b"0xff", 16, 255),  # base 16 still skips a 0x prefix
    (b"10", 8, 8),
    (b"010", 10, 10),
])
def test_kstrtoull_explicit_base(text, base, value):
    assert kstrtoull(text, base) == value


@pytest.mark.parametrize("text, base", [(b"0x10", 10), (b"8", 8), (b"g", 16)])
def test_kstrtoull_explicit_base_einval(text, base):
    with pytest.raises(OSError) as exc:
        kstrtoull(text, base)
    assert exc.value.errno == errno.EINVAL


u32 = st.integers(0, U32_MAX)
sign = st.sampled_from([b"", b"+"])
newline = st.sampled_from([b"", b"\n"])


@given(u32, sign, newline, st.sampled_from(["dec", "hex", "HEX", "oct"]))
def test_any_u32_in_any_base_round_trips(value, plus, nl, base):
    text = {"dec": b"%d" % value, "hex": b"0x%x" % value, "HEX": b"0X%X" % value,
            "oct": b"0%o" % value}[base]
    assert kstrtou32(plus + text + nl) == value


@given(st.integers(U32_MAX + 1, 2**80), newline)
def test_any_value_above_u32_is_erange(value, nl):
    with pytest.raises(OSError) as exc:
        kstrtou32(b"%d" % value + nl)
    assert exc.value.errno == errno.ERANGE


@given(u32, st.sampled_from([b" ", b"x", b"\n\n", b".", b"-", b"\t", b"g"]))
def test_trailing_junk_is_einval(value, junk):
    with pytest.raises(OSError) as exc:
        kstrtou32(b"%d" % value + junk)
    assert exc.value.errno == errno.EINVAL


def test_attribute_modes():
    assert Attribute("ro", lambda: "").mode == 0o444
    assert Attribute("rw", lambda: "", lambda buf, caller: None).mode == 0o644
