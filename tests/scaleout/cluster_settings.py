"""The settings of the live scale-out tests' replicas and single server, in a module of its own
name: test modules import it directly (`from conftest import ...` would find whichever
directory's conftest was imported first as `conftest` in a whole-suite run)."""

from __future__ import annotations

from promptcache.server.settings import ServerSettings

REPLICAS = 3
REPLICA_CPUS = 0.5  # --replica-cpus: 1.5 of Ray's 2 CPUs reserved, one torch thread each


def settings_for(model_dir, records_db: str | None = None) -> ServerSettings:
    """Each replica's settings and the single server's. Batch-invariant decoding is off: its
    start-up probe costs each of the four engines seconds, and nothing here compares replies of
    requests that shared a batch (the equality tests send one request at a time, and the cache
    is bitwise neutral in either mode, docs/design.md)."""
    return ServerSettings(model=str(model_dir), default_max_tokens=8, cache_mb=8.0, max_batch_size=4,
                          deterministic=False, **({"records_db": records_db} if records_db else {}))
