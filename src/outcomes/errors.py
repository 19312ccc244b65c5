"""The errors a user can cause, one family: each message is one sentence that says what to do.

The command line turns any `OutcomesError` into that sentence on stderr and exit 1.
"""

from __future__ import annotations


class OutcomesError(Exception):
    """Input that cannot be used; the message is one sentence for the user."""


class LoadError(OutcomesError):
    """The input cannot be used at all; the message is one sentence for the user.

    Defined here (and re-exported by `outcomes.load`) so the command line can name it
    without importing pandas."""


class ProtocolError(OutcomesError):
    """A protocol file that cannot be used; the message names the file, criterion and key."""


class ExportError(OutcomesError):
    """A research export that cannot be made or would not be safe."""
