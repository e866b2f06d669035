"""Gemini's v1 paths: POST /v1/models/{model}:generateContent, :streamGenerateContent and
:countTokens, the same routes as under /v1beta.

google-genai talks to `v1` unless told otherwise, so these let it work against this server as
it comes. Their errors take Gemini's shape (a pattern that claims the method paths only, not
OpenAI's `GET /v1/models/{id}` beside them); the model list and model lookups there answer in
Gemini's shapes to google-genai's requests (server/models.py). Cached contents stay a v1beta
resource, as in Gemini's own API.
"""

from __future__ import annotations

from fastapi import APIRouter

from promptcache.server.errors import register_error_shape
from promptcache.server.gemini import count, generate
from promptcache.server.gemini.errors import gemini_error

ROUTES = {":generateContent": generate.generate_content, ":streamGenerateContent": generate.stream_generate_content,
          ":countTokens": count.count_tokens}
router = APIRouter(prefix="/v1")
for method, endpoint in ROUTES.items():
    register_error_shape(f"/v1/models/*{method}", gemini_error)
    router.add_api_route("/models/{model}" + method, endpoint, methods=["POST"], response_model=None)
