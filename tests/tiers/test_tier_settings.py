"""--disk-cache, --disk-cache-gb, --redis-url and --tier-key, from the command line or TOML."""

from __future__ import annotations

import pytest

from promptcache.server.settings import build_settings


def test_toml_keys_and_defaults(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text('disk-cache = "/var/cache/pc"\ndisk_cache_gb = 2.5\nredis_url = "redis+cluster://:pw@r1:7000"\n'
                      f'tier_key = "{"ab" * 32}"\n')
    settings = build_settings({}, config_file=config)
    tiers = settings.tier_config()
    assert (tiers.disk_dir, tiers.disk_gb, tiers.redis_url, tiers.tier_key) == (
        "/var/cache/pc", 2.5, "redis+cluster://:pw@r1:7000", "ab" * 32)
    assert "pw" not in repr(settings) and "pw" not in repr(tiers) and "abab" not in repr(settings)
    assert not build_settings({}).tier_config().enabled  # memory only by default


@pytest.mark.parametrize("options, message", [
    (dict(redis_url="http://localhost:6379"), "must start with one of redis://"),
    (dict(disk_cache="/tmp/x", disk_cache_gb=0), "must be positive"),
    (dict(disk_cache="/tmp/x", tier_key="00" * 31), "64 hex digits"),
    (dict(tier_key="00" * 32), "give --disk-cache or --redis-url"),
    (dict(disk_cache="/tmp/x", cache_enabled=False), "need the prefix cache"),
])
def test_bad_tier_options_fail_at_start_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as error:
        build_settings(options)
    assert "\n" not in str(error.value)
