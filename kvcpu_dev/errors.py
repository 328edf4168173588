"""The one error every layer may raise to refuse something: a start, a
stop, a recording, a control.  It carries one line for the user, never a
traceback."""

import errno as _errno


class StartError(Exception):
    """A reason not to start (or stop, or record), said in one line;
    ``errno`` is what a refused attribute write answers (EINVAL unless the
    cause has its own, such as ENOSPC)."""

    def __init__(self, message: str, errno: int = _errno.EINVAL):
        super().__init__(message)
        self.errno = errno
