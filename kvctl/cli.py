"""The ``kvctl`` command line.

The five reference commands behave exactly as the reference tool: numbers
parsed like C ``strtoull(s, &end, 0)``; a usage problem prints one line
naming it, then the usage, and exits 1; a failed open prints ``open PATH: <strerror>`` and a failed
ioctl ``ioctl STEP: <strerror>``, each exiting 1; success prints nothing.
"""

from __future__ import annotations

import sys

from kvcpu_dev.client import default_device

from . import device
from .errors import Failure, Usage
from .numbers import strtoull

USAGE = """\
usage: kvctl [--device PATH] <command> [args]
  step <n>                    advance the decode step
  hot <va> <len>              mark a KV block hot
  evict <va> <len>            evict a KV block now
  prefetch <va> <len> <step>  prefetch a block for a step
  share <va> <len>            share a prefix block
  telemetry [--json]          show the device's telemetry
  weights [--json] [name=value ...]
                              show or set HEPC weights and thresholds
  stats [--json]              device model counters
  blocks [--tier T] [--va ADDR|START-END|START+LEN] [--json]
                              device model block directory
  record [start FILE | stop]  record every command the device gets (alone: its state)
  log FILE [--json] [--kind CMD]
                              print a recording, decoded
  replay FILE [--device PATH] [--speed max|X] [--check]
  replay FILE --model [--config F] [--json] [--timing]
                              re-issue a recording (or run it through the model)
  fault add CMD [--errno E] [--count N|--every N|--probability P [--seed S]] [--latency 5ms]
  fault list | clear | del ID injected faults
  reset | unplug | replug     function-level reset; surprise removal and return
  top [--interval S] [--once|--count N]
                              live view: rates, latencies, tiers, DMA, faults
numbers: decimal, 0x hex or 0 octal; PATH defaults to $KVCPU_DEVICE or /dev/kvcpu0
a program's own madvise(MADV_KV_HOT/EVICT/PREFETCH): kvcpu-dev run -- CMD"""


#: The reference tool's commands: label in its messages, client method,
#: and the numbers each takes (as the usage names them).
REFERENCE = {
    "step": ("STEP", "step", ("n",)),
    "hot": ("HOT", "mark_hot", ("va", "len")),
    "evict": ("EVICT", "evict", ("va", "len")),
    "prefetch": ("PREFETCH", "prefetch", ("va", "len", "step")),
    "share": ("SHARE", "share_prefix", ("va", "len")),
}


def _split_device(args: list[str]) -> tuple[str | None, list[str]]:
    """A leading ``--device PATH`` (or ``--device=PATH``), then the rest."""
    if args[:1] == ["--device"]:
        if len(args) < 2:
            raise Usage("--device needs a PATH")
        return args[1], args[2:]
    if args and args[0].startswith("--device="):
        return args[0].split("=", 1)[1], args[1:]
    return None, args


def run_reference(path: str | None, command: str, words: list[str]) -> None:
    """One of the five reference commands, parsed as the reference parses
    them: the exact argument count, each a whole ``strtoull(s, &end, 0)``
    number (so ``-1`` is 2**64-1, and ``--`` or ``--help`` are not numbers)."""
    label, method, names = REFERENCE[command]
    if len(words) != len(names):
        wanted = " ".join(f"<{n}>" for n in names)
        raise Usage(f"{command} takes {len(names)} number{'s' if len(names) > 1 else ''} "
                    f"({wanted}), got {len(words)}")
    numbers = []
    for name, word in zip(names, words):
        try:
            numbers.append(strtoull(word))
        except ValueError as exc:
            raise Usage(f"{command} <{name}>: {exc}") from None
    device.call(path or default_device(), label, lambda d: getattr(d, method)(*numbers))


def main(argv: list[str] | None = None) -> None:
    """The reference commands import neither click nor the group: a runtime
    may run ``kvctl step`` once per decode step, so its start-up counts."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args in (["-h"], ["--help"]):
            print(USAGE)
            sys.exit(0)
        path, rest = _split_device(args)
        if not rest:
            raise Usage("no command given")
        if rest[0] in REFERENCE:
            run_reference(path, rest[0], rest[1:])
        else:
            from . import group

            group.run(args)
    except Usage as exc:
        if exc.problem:
            print(f"kvctl: {exc.problem}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        sys.exit(1)
    except Failure as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
