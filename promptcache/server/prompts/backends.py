"""Which prompt store `--prompt-store` names.

- unset: the storage tiers' Redis when --redis-url is given (replicas share their prompts),
  else the SQLite file ~/.cache/promptcache/prompts.sqlite3;
- a path, `sqlite:///PATH` or ":memory:": that SQLite file;
- `redis://...` (or rediss://, redis+cluster://): that Redis;
- `mlflow+http://HOST:PORT` (or mlflow+https://): an MLflow tracking server's prompt registry,
  with the extra `promptcache[mlflow]` installed.
"""

from __future__ import annotations

import importlib.util

from promptcache.server.prompts.store import PromptStore, SqlitePromptStore
from promptcache.tiers.redis_store import SCHEMES as REDIS_SCHEMES

DEFAULT_DB = "~/.cache/promptcache/prompts.sqlite3"
MLFLOW_SCHEMES = ("mlflow+http://", "mlflow+https://")


def check_spec(spec: str | None) -> None:
    """A malformed --prompt-store fails at start, in one line (no connection is made)."""
    if spec is None:
        return
    if not spec.strip():
        raise ValueError("--prompt-store is empty")
    if spec.startswith("mlflow") and not spec.startswith(MLFLOW_SCHEMES):
        raise ValueError("an MLflow prompt store is mlflow+http://HOST:PORT or mlflow+https://HOST:PORT")
    if spec.startswith(MLFLOW_SCHEMES) and importlib.util.find_spec("mlflow") is None:
        raise ValueError("--prompt-store mlflow+http://... needs MLflow: pip install 'promptcache[mlflow]'")
    if "://" in spec and not spec.startswith((*MLFLOW_SCHEMES, *REDIS_SCHEMES, "sqlite:///")):
        raise ValueError("--prompt-store is a SQLite path, sqlite:///PATH, redis://..., or mlflow+http://HOST:PORT")


def open_store(spec: str | None, *, redis_url: str | None = None, tier_key: str | None = None) -> PromptStore:
    check_spec(spec)
    if spec is None:
        spec = redis_url or DEFAULT_DB
    if spec.startswith(MLFLOW_SCHEMES):
        from promptcache.server.prompts.mlflow_store import MlflowPromptStore

        return MlflowPromptStore(spec.removeprefix("mlflow+"))
    if spec.startswith(REDIS_SCHEMES):
        from promptcache.server.prompts.redis_store import RedisPromptStore

        return RedisPromptStore(spec, tier_key=tier_key)
    return SqlitePromptStore(spec.removeprefix("sqlite://"))
