"""The one way a simulated command fails."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """The controller refuses the command: the reply is ``?xx`` (the message is for logs).

    The wire carries no reason, so handlers raise this and the server turns it into the
    bare refusal a real controller sends; the message only reaches our own log.
    """
