"""The prompt registry: versioned templates referenced by id from Responses and chat
completions, optionally kept warm in the cache (docs/prompts.md)."""
