from __future__ import annotations

import pytest
from redis_servers import RedisClusterNodes, RedisServer, need_redis
from tier_engines import CACHE

from tests.engine.helpers import tiny_engine


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    need_redis()
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def replicas(tiny_llama_dir):
    """Two engines over the tiny model: replicas A and B (each restarted by `with_tiers`)."""
    return tiny_engine(tiny_llama_dir, cache=CACHE), tiny_engine(tiny_llama_dir, cache=CACHE)
