"""How the ingress combines the replicas' answers (promptcache/scaleout/per_replica.py), without
Ray: the cluster's cache figures from each replica's, and which prefixes are kept everywhere."""

from __future__ import annotations

import pytest

from promptcache.scaleout.per_replica import combine_stats, everywhere


def test_counters_and_bytes_are_summed_and_shared_figures_taken_once():
    a = {"enabled": True, "block_size": 16, "block_nbytes": 4096, "hit_tokens": 30, "miss_tokens": 10,
         "token_hit_ratio": 0.75, "blocks_held": 3, "tenant_bytes": {"t1": 100},
         "tiers": {"redis": {"hits": 2, "latency_s": 0.01}}, "prefill_tokens_per_s": 900.0}
    b = {"enabled": True, "block_size": 16, "block_nbytes": 4096, "hit_tokens": 0, "miss_tokens": 40,
         "token_hit_ratio": 0.0, "blocks_held": 5, "tenant_bytes": {"t1": 50, "t2": 7},
         "tiers": {"redis": {"hits": 1, "latency_s": 0.02}}, "prefill_tokens_per_s": 800.0}
    out = combine_stats({"r1": a, "r2": b})
    assert out["enabled"] is True and out["block_size"] == 16 and out["block_nbytes"] == 4096
    assert out["blocks_held"] == 8 and out["tenant_bytes"] == {"t1": 150, "t2": 7}
    assert out["tiers"] == {"redis": {"hits": 3}}  # estimates are per replica only
    assert out["token_hit_ratio"] == pytest.approx(30 / 80)  # from the sums, not a sum of ratios
    assert "prefill_tokens_per_s" not in out and out["replicas"] == {"r1": a, "r2": b}


def test_no_replica_answered_is_an_empty_cluster():
    assert combine_stats({}) == {"replicas": {}}


@pytest.mark.parametrize("owner, kept_everywhere", [
    ('pin:0123abcd', True), ('prompt:["t", "p1", "ab"]', True),
    ('session:["t", "ctx_1"]', False), ('cached_content:["t", "c1"]', False), (None, False),
])
def test_admin_pins_and_warm_prompts_are_kept_on_every_replica(owner, kept_everywhere):
    assert everywhere(owner) is kept_everywhere
