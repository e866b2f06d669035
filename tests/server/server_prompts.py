"""Prompts and keys shared by the server tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

KEYS = {
    "key-alice": {"tenant": "alice"},
    "key-bob": {"tenant": "bob"},
    "key-flood": {"tenant": "flood", "quota_mb": 0.33},
}
ADMIN_KEY = "key-admin"

# About 330 tokens of shared system prompt: 20 full cache blocks of 16.
SYSTEM_PROMPT = " ".join(
    f"Rule {i}: answer politely, cite the handbook section {i * 7}, and never guess." for i in range(22)
)


def chat(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
