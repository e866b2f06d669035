"""The dialect-neutral server core: what a generation request is once a dialect has translated
it (`spec.py`), the dependencies every route shares (`deps.py`), neutral usage (`usage.py`) and
server-sent-event framing (`sse.py`). Nothing here knows any provider's field names; each
dialect subpackage (`server/openai/`, `server/anthropic/`) translates to and from these types."""
