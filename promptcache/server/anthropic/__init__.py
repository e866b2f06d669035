"""The Anthropic dialect: POST /v1/messages and /v1/messages/count_tokens (`routes.py`), their
bodies (`schema.py`), translation to the neutral spec with `cache_control` breakpoints
(`translate.py`), the typed event stream (`stream.py`) and Anthropic's error shape
(`errors.py`). Auth is `x-api-key: KEY` (or a Bearer header), onto the same tenants."""
