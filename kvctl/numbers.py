"""Numbers as the reference kvctl reads them: C ``strtoull(s, &end, 0)``
with the whole argument consumed."""

from __future__ import annotations

U64 = 1 << 64
_SPACE = " \t\n\v\f\r"


def strtoull(text: str) -> int:
    """Parse like ``strtoull(text, &end, 0)`` and insist ``*end == '\\0'``.

    Leading white space and one sign are allowed; ``0x`` means hex and a
    leading ``0`` octal; a minus sign wraps modulo 2**64 as in C.  Raises
    ValueError when nothing is converted, something is left over, or the
    value does not fit in 64 bits (strtoull's ERANGE)."""
    s = text.lstrip(_SPACE)
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    base = 10
    if s[:1] == "0":
        base = 8
        if s[1:2] in ("x", "X") and s[2:3] and s[2:3] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
    digits = 0
    value = 0
    for ch in s:
        d = int(ch, 16) if ch in "0123456789abcdefABCDEF" else 99
        if d >= base:
            break
        value = value * base + d
        digits += 1
    if digits == 0:
        raise ValueError(f"not a number: {text!r}")
    if s[digits:]:
        raise ValueError(f"trailing characters in {text!r}")
    if value >= U64:
        raise ValueError(f"out of range: {text!r}")
    return (-value) % U64 if negative else value
