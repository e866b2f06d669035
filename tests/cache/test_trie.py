"""The block trie: structure only (links, walk, collision check, detach, post-order)."""

from __future__ import annotations

import math

from promptcache.cache.keys import Namespace, PromptKeys, block_keys, iter_block_keys, pack_tokens
from promptcache.cache.trie import BlockTrie

NS = Namespace(model="m")
BS = 4


def build(trie: BlockTrie, tokens: list[int], start_payload: int = 0):
    root = trie.root(NS.root_key(), NS.tenant, create=True)
    node = root
    path = trie.walk(root, PromptKeys(tokens, NS, BS), len(tokens) // BS)
    if path:
        node = path[-1]
    for i, (key, block) in enumerate(iter_block_keys(pack_tokens(tokens), BS, node.key, len(path))):
        node = trie.add_child(node, key, block, start_payload + i, "user", 0.0, math.inf)
    return root


def test_shared_prefixes_are_stored_once():
    trie = BlockTrie()
    build(trie, list(range(16)))
    build(trie, list(range(8)) + [99] * 8)
    assert len(trie) == 4 + 2  # 2 shared blocks, 2 + 2 distinct


def test_walk_finds_the_longest_cached_prefix_and_stops_hashing_at_a_miss():
    trie = BlockTrie()
    root = build(trie, list(range(16)))
    keys = PromptKeys(list(range(12)) + [7] * 8, NS, BS)
    path = trie.walk(root, keys, 5)
    assert [n.key for n in path] == block_keys(list(range(12)), BS, NS)
    assert len(keys._keys) == 4  # three hits and the miss: nothing past it is hashed
    assert trie.walk(root, PromptKeys(list(range(16)), NS, BS), 2) == path[:2]  # limit


def test_a_key_hit_with_other_tokens_is_a_miss():
    trie = BlockTrie()
    root = build(trie, list(range(8)))
    first = next(iter(root.children.values()))
    first.tokens = pack_tokens([9, 9, 9, 9])  # as if another block had collided on this key
    assert trie.walk(root, PromptKeys(list(range(8)), NS, BS), 2) == []


def test_detach_only_leaves_and_drop_an_emptied_root():
    trie = BlockTrie()
    root = build(trie, list(range(8)))
    leaf = trie.walk(root, PromptKeys(list(range(8)), NS, BS), 2)[-1]
    parent = trie.detach(leaf)
    assert parent is not None and not parent.children and not leaf.alive
    assert trie.detach(parent) is None  # root emptied: gone too
    assert trie.roots() == [] and len(trie) == 0


def test_postorder_yields_children_first_and_survives_deep_chains():
    trie = BlockTrie()
    root = build(trie, list(range(4 * 5000)))  # a 5,000-deep chain: no recursion limit
    order = list(BlockTrie.postorder(root))
    assert len(order) == 5000
    position = {id(n): i for i, n in enumerate(order)}
    assert all(position[id(n)] < position[id(n.parent)] for n in order if n.parent.parent is not None)


def test_roots_are_per_namespace_and_filterable_by_tenant():
    trie = BlockTrie()
    trie.root(Namespace("m", "a").root_key(), "a", create=True)
    trie.root(Namespace("m", "b").root_key(), "b", create=True)
    assert trie.root(Namespace("m", "c").root_key(), "c", create=False) is None
    assert [r.tenant for r in trie.roots("a")] == ["a"]
    assert len(trie.roots()) == 2
