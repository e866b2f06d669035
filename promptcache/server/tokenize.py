"""Tokenizer endpoints, so clients count and align tokens exactly as the server does.

`POST /tokenize` and `POST /detokenize` in vLLM's shapes (a `prompt`, or chat `messages`
rendered through the model's template as a chat request would be), also accepting llama.cpp's
`content`, `add_special` and `with_pieces`; `GET /tokenizer_info` as vLLM serves it, the
equivalent of tokenizer_config.json. Evaluation harnesses (lm-evaluation-harness's remote
tokenizer) use these instead of downloading the tokenizer from a model hub.

Every field is declared: an unknown one is a 400, never ignored. Rendering and tokenizing run
in the bounded worker threads of every other prompt (`off_loop`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from pydantic import BaseModel, ConfigDict, Field

from promptcache.engine.api import EngineInputError
from promptcache.server.core.deps import check_model, off_loop, server_state, tenant_of
from promptcache.server.core.fields import Text
from promptcache.server.limits import check_messages
from promptcache.server.prompt_size import check_prompt_chars
from promptcache.server.openai.schema import ChatMessage
from promptcache.server.tenants import Tenant

router = APIRouter()


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text | None = None
    prompt: Text | None = None
    content: Text | None = None  # llama.cpp's name for prompt
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages
    add_special: bool | None = None  # llama.cpp's name for add_special_tokens
    add_generation_prompt: bool = True
    return_token_strs: bool = False
    with_pieces: bool = False  # llama.cpp's name for return_token_strs


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    tokens: list[int] = Field(max_length=1_000_000)


def _tokens(state, body: TokenizeRequest) -> list[int]:
    texts = [t for t in (body.prompt, body.content) if t is not None]
    if len(texts) + (body.messages is not None) != 1:
        raise EngineInputError("send exactly one of prompt (or content) and messages", "prompt")
    add_special = body.add_special_tokens if body.add_special_tokens is not None else body.add_special
    if body.messages is not None:
        renderer = state.renderer
        tokens = renderer.render(body.messages).tokens if body.add_generation_prompt \
            else renderer.render_prefix(body.messages)
        bos = state.engine.tokenizer.bos_token_id
        if add_special and bos is not None and tokens[:1] != [bos]:
            tokens = [bos, *tokens]
        return tokens
    check_prompt_chars(texts[0], state.renderer.max_chars, "prompt")  # before the tokenizer's work
    return state.engine.tokenizer.encode(texts[0], add_special_tokens=True if add_special is None else add_special)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    if body.model is not None:
        check_model(state, body.model)
    check_messages(body.messages, state.settings.limits)  # the same limits as a chat request, before rendering
    tokens = await off_loop(state, _tokens, state, body)
    answer: dict[str, Any] = {"count": len(tokens), "max_model_len": state.engine.context_length, "tokens": tokens,
                              "token_strs": None}
    if body.return_token_strs or body.with_pieces:
        backend = state.engine.tokenizer.backend
        answer["token_strs"] = [backend.id_to_token(t) for t in tokens]
    return answer


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    if body.model is not None:
        check_model(state, body.model)
    tokenizer = state.engine.tokenizer
    if any(not 0 <= t < tokenizer.vocab_size for t in body.tokens):
        raise EngineInputError("tokens contains ids outside the vocabulary", "tokens")
    return {"prompt": await off_loop(state, tokenizer.decode, body.tokens)}


@router.get("/tokenizer_info")
async def tokenizer_info(http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    tokenizer = state.engine.tokenizer
    backend = tokenizer.backend

    def text(token_id: int | None) -> str | None:
        return None if token_id is None else backend.id_to_token(token_id)

    template = tokenizer.chat_template
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": state.engine.context_length,
        "vocab_size": tokenizer.vocab_size,
        "bos_token": text(tokenizer.bos_token_id),
        "eos_token": text(tokenizer.eos_token_ids[0] if tokenizer.eos_token_ids else None),
        "eos_token_ids": list(tokenizer.eos_token_ids),
        "add_bos_token": tokenizer.add_bos,
        "chat_template": getattr(template, "source", None),
    }
