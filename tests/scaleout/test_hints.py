"""Affinity ids read from a request as it passes to its route (promptcache/scaleout/hints.py),
through a real Starlette app: the header, the body fields, and what is ignored."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from promptcache.scaleout.hints import MAX_ID_CHARS, RoutingHints, current_ids


async def echo(request: Request):
    await request.body()  # the route reads its body first, as the real routes do
    return JSONResponse(current_ids())


def send(method="POST", **kw):
    app = Starlette(routes=[Route("/v1/x", echo, methods=["POST", "GET"])])
    app.add_middleware(RoutingHints)

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return (await client.request(method, "/v1/x", **kw)).json()

    return [tuple(x) for x in asyncio.run(run())]


def test_session_and_previous_response_ids():
    assert send(json={"session_id": "s1", "previous_response_id": "resp_1"}) == [
        ("session", "s1"), ("response", "resp_1")]
    assert send(json={"session_id": "body"}, headers={"x-session-id": "hdr"}) == [("session", "hdr")]
    assert send(json={"input": "no ids here"}) == []


def test_what_is_not_an_id_is_ignored():
    assert send(json={"session_id": "x" * (MAX_ID_CHARS + 1)}) == []
    assert send(json={"session_id": 5, "previous_response_id": ["a"]}) == []
    assert send(content=b'{"session_id": "s1"', headers={"content-type": "application/json"}) == []
    assert send(json=["session_id"]) == []
    assert send("GET") == []
