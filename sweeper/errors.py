"""The one exception family the CLI turns into a one-line message and a non-zero exit."""


class SweeperError(Exception):
    """A problem a user can fix: the message names the file/field and says what to do."""


class Interrupted(SweeperError):
    """The user stopped the run (Ctrl-C): the message says how to go on; the exit status is 130."""
