"""kvctl's two errors: their own module so that the command modules and
the entry point share them without importing each other."""


class Failure(Exception):
    """A one-line error for stderr; exit status 1."""


class Usage(Exception):
    """Print the usage and exit 1, as the reference tool does."""
