"""Errors the prefix cache raises to its callers (the engine, and through it the server)."""

from __future__ import annotations


class PinBudgetExceeded(Exception):
    """A pin that would take a tenant, or the whole cache, past its pin budget; nothing was pinned.

    All figures are bytes. requested_bytes counts only the blocks the pin would newly pin (blocks
    already pinned cost nothing again); the *_pinned_bytes figures are what was pinned before the
    refused call. The server answers this with 409 and these figures.
    """

    def __init__(self, tenant: str, requested_bytes: int, tenant_pinned_bytes: int, tenant_budget_bytes: int,
                 global_pinned_bytes: int, global_budget_bytes: int) -> None:
        self.tenant = tenant
        self.requested_bytes = requested_bytes
        self.tenant_pinned_bytes = tenant_pinned_bytes
        self.tenant_budget_bytes = tenant_budget_bytes
        self.global_pinned_bytes = global_pinned_bytes
        self.global_budget_bytes = global_budget_bytes
        super().__init__(tenant, requested_bytes, tenant_pinned_bytes, tenant_budget_bytes,
                         global_pinned_bytes, global_budget_bytes)

    @property
    def scope(self) -> str:
        """Which budget refused the pin: "tenant" (checked first) or "global"."""
        if self.tenant_pinned_bytes + self.requested_bytes > self.tenant_budget_bytes:
            return "tenant"
        return "global"

    def __str__(self) -> str:
        return (f"pinning {self.requested_bytes} more bytes for tenant {self.tenant!r} exceeds the "
                f"{self.scope} pin budget: tenant {self.tenant_pinned_bytes}/{self.tenant_budget_bytes} bytes "
                f"pinned, cache {self.global_pinned_bytes}/{self.global_budget_bytes} bytes pinned")
