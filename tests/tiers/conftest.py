from __future__ import annotations

import pytest
from redis_servers import RedisClusterNodes, RedisServer, need_redis


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
