"""A progress bar on stderr, only when stderr is a terminal (logs and
pipes stay clean)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Bar(Protocol):
    """What callers use of a progress bar: tqdm's, or one that shows nothing."""

    def update(self, n: int = 1) -> object: ...
    def set_postfix_str(self, s: str) -> None: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


@contextmanager
def bar(total: int, desc: str, enabled: bool | None = None) -> Iterator[Bar]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _Silent()
        return
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience, never a requirement
        yield _Silent()
        return
    with tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True) as t:
        yield t
