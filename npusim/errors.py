"""The one error type users see: a message that names what is wrong and where."""


class NpusimError(Exception):
    """Bad model, bad input or unsupported construct. The CLI prints its message and exits 2."""
