"""Each dialect's error body names the status in its own words, a fallback for the rest."""

import pytest

from promptcache.server.anthropic.errors import anthropic_error
from promptcache.server.errors import APIError
from promptcache.server.gemini.errors import gemini_error


@pytest.mark.parametrize("status, anthropic_type, gemini_status", [
    (400, "invalid_request_error", "INVALID_ARGUMENT"),
    (404, "not_found_error", "NOT_FOUND"),
    (405, "invalid_request_error", "INVALID_ARGUMENT"),  # in neither table: a client error
    (409, "invalid_request_error", "RESOURCE_EXHAUSTED"),
    (429, "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (500, "api_error", "INTERNAL"),  # in neither table: a server error
    (503, "overloaded_error", "UNAVAILABLE"),
])
def test_each_dialect_names_every_status(status, anthropic_type, gemini_status):
    err = APIError(status, "why")
    assert anthropic_error(err) == {"type": "error", "error": {"type": anthropic_type, "message": "why"}}
    assert gemini_error(err) == {"error": {"code": status, "message": "why", "status": gemini_status}}
