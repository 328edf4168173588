"""The one error every layer may raise to refuse something: a start, a
stop, a recording, a control.  It carries one line for the user, never a
traceback."""


class StartError(Exception):
    """A reason not to start (or stop, or record), said in one line."""
