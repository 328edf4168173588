"""kvctl's two errors: their own module so that the command modules and
the entry point share them without importing each other."""


class Failure(Exception):
    """One or more lines for stderr; exit status 1."""


class Usage(Exception):
    """Print the usage and exit 1, as the reference tool does; ``problem``,
    when given, is printed first as one line naming what was wrong (the
    usage alone says what is allowed, not what was not)."""

    def __init__(self, problem: str = ""):
        super().__init__(problem)
        self.problem = problem
