"""The block trie: a radix tree whose edges are block keys.

Each namespace has a root (keyed by `Namespace.root_key()`); below it every node is one full
block whose key chains from its parent's. A node's children are a dict keyed by block key, so a
prefix shared by many prompts is stored once, and the longest cached prefix is found by walking
down child by child. A node keeps the packed tokens of its block so a hash hit is compared
before it is trusted.

Ownership: the trie owns structure only (parent/children links, the node count). Reference
counts, pins, TTLs and eviction order are fields on the node that `PrefixCache` maintains; the
payload belongs to the engine and is never interpreted here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from promptcache.cache.keys import BlockKey, PromptKeys


class BlockNode:
    """One cached block (or, with `parent is None`, a namespace root holding no payload).

    last_access, hits and expires_at are the data eviction policies read; they change only in
    `touch()`, which also bumps `version` so stale eviction-queue entries can be recognised.
    """

    __slots__ = (
        "key", "parent", "children", "tokens", "payload", "tenant", "role",
        "refcount", "pins", "last_access", "hits", "expires_at", "version", "alive",
    )

    def __init__(self, key: BlockKey, parent: BlockNode | None, tokens: bytes, payload: object,
                 tenant: str, role: str, now: float, expires_at: float) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[BlockKey, BlockNode] = {}
        self.tokens = tokens
        self.payload = payload
        self.tenant = tenant
        self.role = role
        self.refcount = 0
        self.pins = 0
        self.last_access = now
        self.hits = 1
        self.expires_at = expires_at
        self.version = 0
        self.alive = True

    def touch(self, now: float, expires_at: float | None = None) -> None:
        """Record a use: recency, frequency and (on insert) a TTL that only ever extends."""
        self.last_access = now
        self.hits += 1
        if expires_at is not None and expires_at > self.expires_at:
            self.expires_at = expires_at
        self.version += 1

    def expired(self, now: float) -> bool:
        """Past its TTL; a pinned block never expires while pinned."""
        return self.expires_at <= now and self.pins == 0

    @property
    def evictable(self) -> bool:
        """A live leaf nobody holds or pins: the only kind of node that may be dropped."""
        return self.alive and not self.children and self.refcount == 0 and self.pins == 0

    def __repr__(self) -> str:
        return f"BlockNode({self.key.hex()[:8]}, tenant={self.tenant!r}, role={self.role!r}, refs={self.refcount}, pins={self.pins})"


class BlockTrie:
    """Namespace roots and the nodes below them. Counts blocks (roots excluded)."""

    def __init__(self) -> None:
        self._roots: dict[BlockKey, BlockNode] = {}
        self.num_blocks = 0

    def root(self, root_key: BlockKey, tenant: str, create: bool) -> BlockNode | None:
        node = self._roots.get(root_key)
        if node is None and create:
            node = BlockNode(root_key, None, b"", None, tenant, "system", 0.0, math.inf)
            self._roots[root_key] = node
        return node

    def roots(self, tenant: str | None = None) -> list[BlockNode]:
        return [r for r in self._roots.values() if tenant is None or r.tenant == tenant]

    def drop_root(self, root: BlockNode) -> None:
        """Forget a namespace root that has no blocks left."""
        assert root.parent is None and not root.children
        self._roots.pop(root.key, None)

    def add_child(self, parent: BlockNode, key: BlockKey, tokens: bytes, payload: object,
                  role: str, now: float, expires_at: float) -> BlockNode:
        """Link a new block under `parent`; the caller checked that `key` is not taken."""
        node = BlockNode(key, parent, tokens, payload, parent.tenant, role, now, expires_at)
        parent.children[key] = node
        self.num_blocks += 1
        return node

    def detach(self, node: BlockNode) -> BlockNode | None:
        """Unlink a leaf; returns its parent, or None when the parent was an emptied root (dropped too,
        unless an insert holds it)."""
        assert not node.children and node.parent is not None, "only leaves are detached"
        parent = node.parent
        del parent.children[node.key]
        node.alive = False
        node.parent = None
        self.num_blocks -= 1
        if parent.parent is None and not parent.children and parent.refcount == 0:
            del self._roots[parent.key]
            return None
        return parent

    @staticmethod
    def postorder(node: BlockNode) -> Iterator[BlockNode]:
        """Every block of `node`'s subtree, children before parents (root sentinels excluded).

        Iterative, since a 100k-token prompt is a chain thousands of blocks deep. The children
        of each node are listed before any is yielded, so callers may detach as they go.
        """
        stack: list[tuple[BlockNode, bool]] = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            if expanded:
                if current.parent is not None:
                    yield current
                continue
            stack.append((current, True))
            stack.extend((child, False) for child in list(current.children.values()))

    @staticmethod
    def walk(root: BlockNode, keys: PromptKeys, limit: int) -> list[BlockNode]:
        """The cached nodes along the first `limit` full blocks of a prompt, up to the first miss.

        Takes each block's key from `keys` (hashed once per prompt, and only as far as the walk
        goes). A key present with different tokens (a hash collision) is a miss. Expiry is the
        caller's concern.
        """
        path: list[BlockNode] = []
        node = root
        key, block = keys.key, keys.block  # bound once: the analyzer walks millions of blocks
        for index in range(min(keys.num_blocks, limit)):
            child = node.children.get(key(index))
            if child is None or child.tokens != block(index):
                break
            path.append(child)
            node = child
        return path

    def __len__(self) -> int:
        return self.num_blocks
