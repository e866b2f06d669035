"""Settings precedence, config and keys files, tenants and the key ring (no server needed)."""

from __future__ import annotations

import json

import pytest

from promptcache.server.errors import APIError, param_path
from promptcache.server.settings import ServerSettings, build_settings, load_config_file
from promptcache.server.tenants import KeyRing, Tenant, load_keys_file, tenant_quotas


def test_overrides_beat_the_config_file_which_beats_defaults(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[server]\nport = 9000\ncache-mb = 64\neviction_policy = "tier"\n')
    s = build_settings({"port": 9100, "cache_mb": None}, config_file=config)
    assert (s.port, s.cache_mb, s.eviction_policy, s.host) == (9100, 64, "tier", "127.0.0.1")


@pytest.mark.parametrize(
    "text, error",
    [("bogus = 1\n", "unknown setting"), ('eviction_policy = "mru"\n', "eviction_policy"), ("port = 0\n", "port")],
)
def test_bad_config_is_rejected(tmp_path, text, error):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ValueError, match=error):
        build_settings({}, config_file=config)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_keys_file_gives_tenants_and_quotas(tmp_path, suffix):
    path = tmp_path / f"keys{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"k1": {"tenant": "a", "quota_mb": 1}, "k2": "b", "k3": {"tenant": "a", "quota_mb": 1}}))
    else:
        path.write_text('k1 = { tenant = "a", quota_mb = 1 }\nk2 = "b"\nk3 = { tenant = "a", quota_mb = 1 }\n')
    keys = load_keys_file(path)
    assert keys == {"k1": Tenant("a", 2**20), "k2": Tenant("b"), "k3": Tenant("a", 2**20)}
    settings = build_settings({"model": "x"}, keys_file=path, api_keys=["plain"])
    assert settings.key_ring().tenant("Bearer plain").name == "key-1"
    assert settings.cache_config().tenant_quotas == {"a": 2**20}


def test_conflicting_quotas_are_rejected():
    with pytest.raises(ValueError, match="two different quotas"):
        tenant_quotas([Tenant("a", 1), Tenant("a", 2)])


def test_config_file_api_keys_table(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[api_keys]\nk = { tenant = "t", quota_mb = 0.5 }\n')
    assert load_config_file(config)["api_keys"] == {"k": Tenant("t", 2**19)}


def test_cache_disabled_gives_no_cache_config():
    assert ServerSettings(cache_enabled=False).cache_config() is None
    assert ServerSettings(cache_mb=2, block_size=32).cache_config().max_bytes == 2 * 2**20


def test_open_key_ring_is_one_default_tenant_and_open_admin():
    ring = KeyRing()
    assert ring.tenant(None).name == "default" and ring.is_admin(None)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic k1", "Bearer wrong", "k1"])
def test_key_ring_rejects_missing_and_wrong_keys(header):
    ring = KeyRing({"k1": Tenant("a")}, admin_key="root")
    with pytest.raises(APIError) as err:
        ring.tenant(header)
    assert err.value.status == 401


def test_key_ring_admin_is_separate_from_tenants():
    ring = KeyRing({"k1": Tenant("a")}, admin_key="root")
    assert ring.tenant("Bearer k1").name == "a" and ring.tenant("bearer  k1").name == "a"
    assert ring.is_admin("Bearer root") and not ring.is_admin("Bearer k1")
    assert not KeyRing({"k1": Tenant("a")}).is_admin("Bearer k1")  # keys but no admin key: closed


@pytest.mark.parametrize(
    "loc, param",
    [
        (("body", "messages", 0, "content"), "messages[0].content"),
        (("body", "messages", 1, "content", "list[TextPart]", 0, "type"), "messages[1].content[0].type"),
        (("body", "temperature"), "temperature"),
        (("body",), None),
    ],
)
def test_param_path_spells_openai_params(loc, param):
    assert param_path(loc) == param


def test_fair_share_settings_reach_the_cache_config(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("default_tenant_share = 0.2\npin_quota_fraction = 0.25\nmax_pinned_fraction = 0.4\n")
    cache = build_settings({}, config_file=config).cache_config()
    assert (cache.default_tenant_share, cache.pin_quota_fraction, cache.max_pinned_fraction) == (0.2, 0.25, 0.4)
    defaults = ServerSettings().cache_config()
    assert defaults.pin_quota_fraction == type(defaults)().pin_quota_fraction  # the cache's own default
