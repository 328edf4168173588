"""kvctl's one error: its own module so that the command modules and the
group (cli.py) share it without importing each other."""


class Failure(Exception):
    """A one-line error for stderr; exit status 1."""
