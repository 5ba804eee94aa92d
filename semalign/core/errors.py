"""The one exception type the command line turns into a one-line message."""


class SemalignError(Exception):
    """A problem with the user's input, data or environment.

    The message names the file or value at fault and the fix; the command line
    prints it as ``error: <message>`` and exits with status 2, with no traceback.
    """
