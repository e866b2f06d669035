"""Least frequently used: the leaf with the fewest touches goes first, oldest first among equals.

`hits` counts the insert plus every lookup and re-insert that reached the block (all in
`BlockNode.touch()`), so a system prompt read by every request outlives a fresher one-off.
"""

from __future__ import annotations

from promptcache.cache.trie import BlockNode


class LFU:
    name = "lfu"

    def sort_key(self, node: BlockNode) -> tuple[int, float]:
        return (node.hits, node.last_access)
