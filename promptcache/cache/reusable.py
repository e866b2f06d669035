"""How much of a prompt a request can read from the cache: the one rule that the engine's load,
the reported usage (`cached_tokens`), /v1/cache/explain's `would_read`, the scale-out router's
prediction and the what-if replay all apply, so that they never disagree.

Every full block short of the prompt's last token: that token's logits start the reply, so it
is always computed. Nothing more is held back: a tail of fewer rows than a block is computed
bitwise as the cold prefill computes those rows (a prefill chunk under 16 rows runs its
products padded to 16, model/llama.py, and attention on the fixed grid, model/attention.py),
so a 26-token prompt sent again reads its first block and computes 10 tokens.
"""

from __future__ import annotations


def reusable_blocks(n_prompt: int, block_size: int, computed: int = 1) -> int:
    """The most leading full blocks of an n_prompt-token prompt that a request can read from the
    cache, leaving at least `computed` tokens to compute (the engine computes 1, the last)."""
    return max(0, n_prompt - computed) // block_size
