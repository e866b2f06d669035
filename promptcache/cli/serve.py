"""`promptcache serve`: the OpenAI-compatible HTTP server over one engine.

Every option has a PROMPTCACHE_* environment variable; `--config FILE.toml` supplies the rest.
An option or variable that is given wins over the file (see promptcache.server.settings).
Request limits (max_body_bytes, max_messages, ...) are set in the file or the environment
only; docs/security.md lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptcache.cli.errors import user_errors
from promptcache.cli.main import app


def _opt(*names: str, env: str, help: str, **kwargs):
    return typer.Option(*names, envvar=f"PROMPTCACHE_{env}", help=help, show_default=False, **kwargs)


@app.command()
def serve(
    host: Annotated[Optional[str], _opt("--host", env="HOST", help="Address to bind (default: 127.0.0.1).")] = None,
    port: Annotated[Optional[int], _opt("--port", env="PORT", help="Port (default: 8000).", min=1, max=65535)] = None,
    model: Annotated[Optional[str], _opt("--model", "-m", env="MODEL", help="GGUF file or Hugging Face directory (default: embedded SmolLM2-135M-Instruct).")] = None,
    served_model_name: Annotated[Optional[list[str]], _opt("--served-model-name", env="SERVED_MODEL_NAME", help="A name requests may give the model (repeatable: aliases, every one listed by /v1/models; replies name the first). Default: the model's own name.")] = None,
    device: Annotated[Optional[str], _opt("--device", env="DEVICE", help="auto, cpu or cuda (default: auto).")] = None,
    dtype: Annotated[Optional[str], _opt("--dtype", env="DTYPE", help="auto, float32 or bfloat16 (default: auto).")] = None,
    quantize: Annotated[Optional[str], _opt("--quantize", env="QUANTIZE", help="int8 or int4: weight-only decode (CPU, bfloat16); int8+head or int4+head quantize the output head too (see docs/benchmarks.md).")] = None,
    deterministic: Annotated[Optional[bool], _opt("--deterministic/--no-deterministic", env="DETERMINISTIC", help="Batch-invariant decoding: a reply never depends on what else is in the batch (default: on; docs/design.md).")] = None,
    share_kv_across_numerics: Annotated[Optional[bool], _opt("--share-kv-across-numerics", env="SHARE_KV_ACROSS_NUMERICS", help="Reuse cached KV made by other CPU kernel families or GPUs; a hit may then change the output.")] = None,
    cache_mb: Annotated[Optional[float], _opt("--cache-mb", env="CACHE_MB", help="Prefix-cache budget in MiB (default: 256).", min=0)] = None,
    no_cache: Annotated[Optional[bool], _opt("--no-cache", env="NO_CACHE", help="Disable prefix caching.")] = None,
    block_size: Annotated[Optional[int], _opt("--block-size", env="BLOCK_SIZE", help="Tokens per cache block (default: 16).", min=1)] = None,
    eviction_policy: Annotated[Optional[str], _opt("--eviction-policy", env="EVICTION_POLICY", help="lru, lfu, ttl or tier (default: lru).")] = None,
    default_ttl_s: Annotated[Optional[float], _opt("--default-ttl-s", env="DEFAULT_TTL_S", help="Time-to-live of cached blocks in seconds (default: none).")] = None,
    min_prefix_blocks: Annotated[Optional[int], _opt("--min-prefix-blocks", env="MIN_PREFIX_BLOCKS", help="Cache only prompts with at least this many full blocks (default: 0).", min=0)] = None,
    admit_after: Annotated[Optional[int], _opt("--admit-after", env="ADMIT_AFTER", help="Store a block once it has been seen this many times (default: 1).", min=1)] = None,
    decode_threads: Annotated[Optional[int], _opt("--decode-threads", env="DECODE_THREADS", help="CPU threads a decode step runs on (default: one per 512 MiB of weights, so 1 for SmolLM2; prefill uses all).", min=1)] = None,
    max_batch_size: Annotated[Optional[int], _opt("--max-batch-size", env="MAX_BATCH_SIZE", help="Sequences decoded together (default: 8).", min=1)] = None,
    max_queue: Annotated[Optional[int], _opt("--max-queue", env="MAX_QUEUE", help="Waiting requests before 429 (default: 64).")] = None,
    http_max_header_bytes: Annotated[Optional[int], _opt("--http-max-header-bytes", env="HTTP_MAX_HEADER_BYTES", help="Largest request head (request line and headers); past it: 431, connection closed (default: 32768).", min=1024)] = None,
    http_header_timeout_s: Annotated[Optional[float], _opt("--http-header-timeout-s", env="HTTP_HEADER_TIMEOUT_S", help="Seconds a connection has to send a request's head (default: 10).", min=0.001)] = None,
    http_body_timeout_s: Annotated[Optional[float], _opt("--http-body-timeout-s", env="HTTP_BODY_TIMEOUT_S", help="Seconds a request has to send its body after its head (default: 60).", min=0.001)] = None,
    http_max_connections: Annotated[Optional[int], _opt("--http-max-connections", env="HTTP_MAX_CONNECTIONS", help="Open connections; past it the one waiting longest for its request is closed (default: 1024).", min=1)] = None,
    http_keep_alive_s: Annotated[Optional[float], _opt("--http-keep-alive-s", env="HTTP_KEEP_ALIVE_S", help="Seconds an idle connection is kept between requests (default: 5).", min=0.001)] = None,
    default_max_tokens: Annotated[Optional[int], _opt("--default-max-tokens", env="DEFAULT_MAX_TOKENS", help="Reply limit when a request sets none (default: 1024).", min=1)] = None,
    config: Annotated[Optional[Path], _opt("--config", env="CONFIG", help="TOML file with any of these settings.", exists=True, dir_okay=False)] = None,
    api_key: Annotated[Optional[list[str]], _opt("--api-key", env="API_KEY", help="Accepted API key (repeatable); each is its own tenant.")] = None,
    keys_file: Annotated[Optional[Path], _opt("--keys-file", env="KEYS_FILE", help="TOML/JSON: key -> {tenant, quota_mb}.", exists=True, dir_okay=False)] = None,
    admin_key: Annotated[Optional[str], _opt("--admin-key", env="ADMIN_KEY", help="Key for /v1/cache/* admin endpoints and /metrics.")] = None,
    metrics_key: Annotated[Optional[str], _opt("--metrics-key", env="METRICS_KEY", help="Key that may read /metrics (and nothing else).")] = None,
    metrics_public: Annotated[Optional[bool], _opt("--metrics-public", env="METRICS_PUBLIC", help="Serve /metrics without a key even when keys are configured.")] = None,
    allowed_host: Annotated[Optional[list[str]], _opt("--allowed-host", env="ALLOWED_HOST", help="Host name accepted besides loopback ones (repeatable; '*.example.com', '*').")] = None,
    allowed_origin: Annotated[Optional[list[str]], _opt("--allowed-origin", env="ALLOWED_ORIGIN", help="Browser origin allowed to call the API (repeatable; e.g. https://app.example.com).")] = None,
    isolate_by: Annotated[Optional[str], _opt("--isolate-by", env="ISOLATE_BY", help="user: partition each tenant's cache by the request's user / safety_identifier.")] = None,
    reject_unknown_fields: Annotated[Optional[bool], _opt("--reject-unknown-fields", env="REJECT_UNKNOWN_FIELDS", help="A request field the server does not know is a 400 naming it (default: served, and named in the x-ignored-fields header).")] = None,
    log_prompts: Annotated[Optional[bool], _opt("--log-prompts", env="LOG_PROMPTS", help="Debug: log prompt text (never logged otherwise).")] = None,
    log_level: Annotated[Optional[str], _opt("--log-level", env="LOG_LEVEL", help="debug, info, warning or error (default: info).")] = None,
    log_format: Annotated[Optional[str], _opt("--log-format", env="LOG_FORMAT", help="text or json (one JSON object per line) (default: text).")] = None,
    disk_cache: Annotated[Optional[str], _opt("--disk-cache", env="DISK_CACHE", help="Directory for a disk tier under the memory cache; it survives restarts (docs/tiers.md).")] = None,
    disk_cache_gb: Annotated[Optional[float], _opt("--disk-cache-gb", env="DISK_CACHE_GB", help="Size cap of the disk tier in GiB (default: 10).")] = None,
    redis_url: Annotated[Optional[str], _opt("--redis-url", env="REDIS_URL", help="redis://, rediss:// or redis+cluster:// URL of a Redis tier shared by replicas.")] = None,
    tier_key: Annotated[Optional[str], _opt("--tier-key", env="TIER_KEY", help="64 hex digits: encrypt blocks on disk and in Redis (AES-GCM).")] = None,
    request_log: Annotated[Optional[str], _opt("--request-log", env="REQUEST_LOG", help="Write one JSON line per generation request here, for `promptcache analyze` (rotated by size).")] = None,
    request_log_bodies: Annotated[Optional[bool], _opt("--request-log-bodies", env="REQUEST_LOG_BODIES", help="Include request bodies (prompt text) in the request log.")] = None,
    request_log_max_mb: Annotated[Optional[float], _opt("--request-log-max-mb", env="REQUEST_LOG_MAX_MB", help="Rotate the request log at this size (default: 100; 5 old files kept).", min=0.001)] = None,
    prompt_store: Annotated[Optional[str], _opt("--prompt-store", env="PROMPT_STORE", help="Prompt registry: a SQLite path, redis://..., or mlflow+http://HOST:PORT (default: the --redis-url Redis, else ~/.cache/promptcache/prompts.sqlite3; docs/prompts.md).")] = None,
    warm_prompts: Annotated[Optional[bool], _opt("--warm-prompts", env="WARM_PROMPTS", help="At start-up, compute and pin every prompt registered with warm: true, before serving.")] = None,
    records_db: Annotated[Optional[str], _opt("--records-db", env="RECORDS_DB", help="Sessions, cached contents and pins: a SQLite file (default: ~/.cache/promptcache/records.sqlite3; in the --redis-url Redis when given).")] = None,
    restore_retained: Annotated[Optional[bool], _opt("--restore-retained", env="RESTORE_RETAINED", help="At start-up, re-pin every live session, cached content and admin pin before serving (docs/context.md).")] = None,
    replicas: Annotated[Optional[int], _opt("--replicas", env="REPLICAS", help="Run N engine replicas as a Ray Serve application behind a prefix-aware router, same HTTP API (docs/deployment.md).", min=1)] = None,
    router: Annotated[Optional[str], _opt("--router", env="ROUTER", help="With --replicas: prefix (default), round-robin or least-loaded.")] = None,
    ray_address: Annotated[Optional[str], _opt("--ray-address", env="RAY_ADDRESS", help="With --replicas: deploy onto this Ray cluster (e.g. ray://head:10001, auto) instead of a local Ray.")] = None,
    replica_cpus: Annotated[Optional[float], _opt("--replica-cpus", env="REPLICA_CPUS", help="With --replicas: CPUs Ray reserves for each replica, and the torch threads each runs (default: a local Ray's CPUs split evenly; 1 on a cluster).")] = None,
) -> None:
    """Serve OpenAI's /v1/chat/completions and /v1/completions with prompt caching."""
    import uvicorn

    from promptcache.server.app import create_app, engine_from_settings
    from promptcache.server.http_protocol import uvicorn_options
    from promptcache.server.logs import configure_logging
    from promptcache.server.settings import build_settings

    with user_errors():
        # Provisional, so that warnings while reading the settings (a keys file readable by
        # others) are shown; reconfigured from the settings below.
        configure_logging("warning", log_format if log_format in ("text", "json") else "text")
        settings = build_settings(
            dict(
                host=host, port=port, model=model, device=device, dtype=dtype, quantize=quantize, cache_mb=cache_mb,
                served_model_names=served_model_name or None,
                deterministic=deterministic, share_kv_across_numerics=share_kv_across_numerics,
                cache_enabled=False if no_cache else None, block_size=block_size,
                eviction_policy=eviction_policy, default_ttl_s=default_ttl_s,
                min_prefix_blocks=min_prefix_blocks, admit_after=admit_after,
                max_batch_size=max_batch_size, max_queue=max_queue, decode_threads=decode_threads,
                default_max_tokens=default_max_tokens, http_max_header_bytes=http_max_header_bytes,
                http_header_timeout_s=http_header_timeout_s, http_body_timeout_s=http_body_timeout_s,
                http_max_connections=http_max_connections, http_keep_alive_s=http_keep_alive_s,
                admin_key=admin_key, metrics_key=metrics_key,
                metrics_public=metrics_public, allowed_hosts=allowed_host or None,
                allowed_origins=allowed_origin or None, isolate_by=isolate_by,
                reject_unknown_fields=reject_unknown_fields,
                log_prompts=log_prompts, log_level=log_level, log_format=log_format,
                disk_cache=disk_cache, disk_cache_gb=disk_cache_gb, redis_url=redis_url, tier_key=tier_key,
                request_log=request_log, request_log_bodies=request_log_bodies, request_log_max_mb=request_log_max_mb,
                prompt_store=prompt_store, warm_prompts=warm_prompts,
                records_db=records_db, restore_retained=restore_retained,
            ),
            config_file=config,
            api_keys=api_key,
            keys_file=keys_file,
        )
        configure_logging(settings.log_level, settings.log_format)
        if replicas is None and (router is not None or ray_address is not None or replica_cpus is not None):
            raise ValueError("--router, --ray-address and --replica-cpus need --replicas")
        if replicas is not None:  # Ray is imported on this path only
            from promptcache.scaleout.launch import ScaleOut, check_ray

            check_ray()
            settings.tier_config()  # a bad tier setting stops here, before Ray starts
            cluster = ScaleOut(replicas=replicas, router=router or "prefix", ray_address=ray_address,
                               replica_cpus=replica_cpus)
    if replicas is not None:
        from promptcache.scaleout.launch import serve_cluster

        return serve_cluster(settings, cluster)
    with user_errors():
        engine = engine_from_settings(settings)
        if settings.tier_config().enabled:
            from promptcache.tiers.config import build_tiers

            engine.attach_tiers(build_tiers(settings.tier_config(), engine.prefix.block_size))
    uvicorn.run(
        create_app(engine, settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to ours (escaped, text or JSON)
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings.http_limits()),  # head size, deadlines, connections (docs/security.md)
    )
    engine.close_tiers()  # the write-behind queue drains before the process ends
