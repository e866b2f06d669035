"""The OpenAI dialect: /v1/chat/completions and /v1/completions (`routes.py`), their bodies
(`schema.py`), translation to the neutral spec (`translate.py`) and the chunk stream
(`stream.py`). Auth is `Authorization: Bearer KEY`; errors use the server's default shape,
which is OpenAI's `{"error": {message, type, param, code}}`."""
