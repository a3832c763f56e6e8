"""Per-principal quotas: how many sessions and streams each principal holds open, refused past a cap.

Keyed by the principal's stable id (what `Request.principal` returns), so one token cannot fill a pool that every
other caller shares. Counting is plain dict arithmetic, paid once per session or stream, never per call.
"""

from mcp_bastion.errors import QuotaExceeded

SLOT_RETRY_AFTER_S = 30  # a session or stream frees when a client leaves or idles out: minutes, not milliseconds


class PrincipalQuota:
    """One capped count per principal (open sessions, or open streams)."""

    __slots__ = ("cap", "held", "name")

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.held: dict[str | None, int] = {}

    def claim(self, principal: str | None) -> "Slot":
        """Count one more for `principal`; the slot gives it back.

        Raises:
            QuotaExceeded: the principal already holds `cap`.
        """
        held = self.held.get(principal, 0)
        if held >= self.cap:
            raise QuotaExceeded(
                f"too many open {self.name} for this caller (limit {self.cap}); close some or retry later",
                quota=f"{self.name}_per_principal",
                limit=self.cap,
                retry_after_s=SLOT_RETRY_AFTER_S,
            )
        self.held[principal] = held + 1
        return Slot(self, principal)

    def release(self, principal: str | None) -> None:
        """Count one fewer for `principal` (forgotten at zero, so the map holds only principals with something open)."""
        left = self.held.get(principal, 0) - 1
        if left > 0:
            self.held[principal] = left
        else:
            self.held.pop(principal, None)

    def of(self, principal: str | None) -> int:
        """How many `principal` holds now."""
        return self.held.get(principal, 0)


class Slot:
    """One claimed unit of a quota; `release` gives it back once, however often it is called."""

    __slots__ = ("principal", "quota")

    def __init__(self, quota: PrincipalQuota, principal: str | None) -> None:
        self.quota: PrincipalQuota | None = quota
        self.principal = principal

    def release(self) -> None:
        """Give the unit back (idempotent)."""
        quota, self.quota = self.quota, None
        if quota is not None:
            quota.release(self.principal)
