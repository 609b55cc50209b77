"""Faults a test can switch on at run time to see how a client copes.

Each is something real links and controllers do: reply late, not reply at all,
refuse a command, cut a FETCH stream short or drop the connection in the middle of
one, report a bad supply.  The server consults :class:`Faults` on every request;
nothing here touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Faults"]


@dataclass
class Faults:
    """The faults in force; the default instance is a healthy controller."""

    reply_delay: float = 0.0
    silence: str | None = None
    failure: str | None = None
    failure_times: int | None = None
    drop_after: int | None = None
    drop_times: int | None = None
    truncate_at: int | None = None
    truncate_times: int | None = None

    def silenced(self, command: str) -> bool:
        """Neither execute nor answer ``command``."""
        return self.silence is not None and command.upper().startswith(self.silence)

    def refused(self, command: str) -> bool:
        """Answer ``?xx`` to ``command`` without executing it (counts one use)."""
        if self.failure is None or self.failure_times == 0:
            return False
        if not command.upper().startswith(self.failure):
            return False
        if self.failure_times is not None:
            self.failure_times -= 1
        return True

    def fetch_limits(self, blocks: int) -> tuple[int, bool]:
        """How many blocks this FETCH sends and whether it then drops the connection."""
        if self.drop_after is not None and self.drop_times != 0:
            if self.drop_times is not None:
                self.drop_times -= 1
            return min(blocks, self.drop_after), True
        if self.truncate_at is not None and self.truncate_times != 0:
            if self.truncate_times is not None:
                self.truncate_times -= 1
            return min(blocks, self.truncate_at), False
        return blocks, False
