"""The one exception type whose message is meant for the person at the terminal."""


class BusnetError(Exception):
    """A user-facing failure: bad input, bad URI, missing data. The CLI prints it as one line."""
