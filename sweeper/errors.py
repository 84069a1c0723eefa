"""The one exception family the CLI turns into a one-line message and a non-zero exit."""


def one_line(text: str) -> str:
    """``text`` with every non-printable character (newline, tab, NUL, ...) written as its escape, so a
    message that quotes a user's key or value stays one readable line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class SweeperError(Exception):
    """A problem a user can fix: the message names the file/field and says what to do. Always one
    line: a user's key or value quoted in it with a control character (newline, tab, NUL) in it is
    written escaped (found by Hypothesis: a manifest or spec key ``"\\n"``)."""

    def __init__(self, message: object = "", *args):
        super().__init__(one_line(str(message)), *args)


class Interrupted(SweeperError):
    """The run was stopped (Ctrl-C, SIGTERM, SIGHUP): the message says how to go on; the exit status
    is 128 + the signal's number (130 for Ctrl-C)."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum
