"""Server-sent-event framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

OpenAI's chat streams send bare `data:` lines ending in `data: [DONE]`; Anthropic's Messages
and OpenAI's Responses streams name each event with an `event:` line. Both are one function.
"""

from __future__ import annotations

import json

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(data: dict | str, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"
