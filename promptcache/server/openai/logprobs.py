"""Logprobs in OpenAI's shapes: chat's `logprobs.content`, the legacy completions object
(`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`, with `echo` the prompt's first),
and vLLM's `prompt_logprobs` extension.

The engine gives each token a record (engine/logprobs.py): its logprob, its rank and its 20 most
likely alternatives; a request's k picks the first k. Which fields ask for what:
- chat: `logprobs: true` and `top_logprobs` (0..20) for the generated tokens;
- completions: `logprobs: k` (0..20, vLLM's bound; OpenAI's legacy endpoint stops at 5), and with
  `echo: true` the prompt's too, served from the cache; `max_tokens: 0` with `echo` scores the
  prompt alone (lm-eval's loglikelihood requests);
- both: `prompt_logprobs: k` (vLLM's extension, in extra_body): the prompt's, in vLLM's shape.
As vLLM does, a token's `top_logprobs` holds the k most likely tokens plus the token itself.

The response is built whole, so its size is bounded before any work (`check_size`): each scored
token shows k + 1 entries, and the entries of every choice together may not pass
`max_logprob_entries`. Echo with logprobs 20 and prompt_logprobs 20 on 16 prompts of 8,000
tokens once made an 841 KB request into a 241 MB response and 4.9 GB of server memory.
"""

from __future__ import annotations

from promptcache.engine.api import MAX_LOGPROBS
from promptcache.engine.logprobs import TokenLogprob
from promptcache.server.errors import bad_request


def _check_stream(body) -> None:
    if body.stream and body.prompt_logprobs is not None:  # as vLLM: there is no chunk to carry them
        raise bad_request("prompt_logprobs are not available when stream is true (with echo, completions "
                          "stream the prompt's logprobs in the logprobs object).", param="prompt_logprobs")


def check_completion(body) -> None:
    """400s for the completions fields that ask for logprobs (names the parameter)."""
    _check_stream(body)
    lp = body.logprobs
    if lp is not None and (isinstance(lp, bool) or not 0 <= lp <= MAX_LOGPROBS):
        raise bad_request(f"logprobs must be an integer between 0 and {MAX_LOGPROBS}.", param="logprobs")
    if body.echo and (body.n or 1) > 1:
        raise bad_request("echo is not supported with n > 1 (each choice would repeat the prompt).", param="echo")
    if body.max_tokens == 0 and not body.echo:
        raise bad_request("max_tokens may be 0 only with echo (to score the prompt alone).", param="max_tokens")


def check_chat(body) -> None:
    _check_stream(body)
    if body.logprobs is not None and not isinstance(body.logprobs, bool):
        raise bad_request("logprobs must be true or false on chat completions (top_logprobs sets the count).",
                          param="logprobs")
    if body.top_logprobs is not None and body.top_logprobs > 0 and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true.", param="top_logprobs")


def response_entries(n_prompt: int, max_new: int, k: int | None, prompt_k: int | None, echo: bool) -> int:
    """Logprob entries one choice can show: k + 1 per generated token, the same per prompt token
    with echo, and prompt_k + 1 per prompt token for vLLM's prompt_logprobs."""
    per_prompt_token = (k + 1 if echo and k is not None else 0) + (prompt_k + 1 if prompt_k is not None else 0)
    return n_prompt * per_prompt_token + (max_new * (k + 1) if k is not None else 0)


def check_size(body, prompt_lengths: list[int], n: int, state) -> None:
    """A 400 before any work when the response's logprobs would pass `max_logprob_entries`,
    counted over every prompt and choice with each reply at its longest."""
    limit, context = state.settings.limits.max_logprob_entries, state.engine.context_length
    echo = bool(getattr(body, "echo", False))  # only completions have it
    k = (completion_counts if hasattr(body, "echo") else chat_counts)(body)[0]
    asked = body.token_limit()
    total = 0
    for n_prompt in prompt_lengths:
        max_new = max(0, min(state.settings.default_max_tokens if asked is None else asked, context - n_prompt))
        total += n * response_entries(n_prompt, max_new, k, body.prompt_logprobs, echo)
    if total > limit:
        param = "prompt_logprobs" if body.prompt_logprobs is not None else "logprobs"
        raise bad_request(f"The response would hold up to {total} logprob entries (tokens x (k + 1), over every "
                          f"prompt and choice); the limit is {limit}. Ask for fewer alternatives, prompts or tokens.",
                          param=param)


def completion_counts(body) -> tuple[int | None, int | None]:
    """(logprobs, prompt_logprobs) the engine computes for a completions request."""
    k = None if body.logprobs is None else int(body.logprobs)
    prompt_k = body.prompt_logprobs
    if body.echo and k is not None:
        prompt_k = max(k, prompt_k or 0)
    return k, prompt_k


def chat_counts(body) -> tuple[int | None, int | None]:
    return (body.top_logprobs or 0) if body.logprobs else None, body.prompt_logprobs


class TokenText:
    """Each token's text, as the logprobs objects show it (cached: a prompt repeats tokens)."""

    def __init__(self, tokenizer):
        self._tokenizer, self._texts = tokenizer, {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self._tokenizer.decode([token_id])
        return text


def _top(record: TokenLogprob, k: int) -> list[tuple[int, float]]:
    """The k most likely alternatives plus the token itself (vLLM's choice)."""
    top = list(record.top[:k])
    if all(t != record.token_id for t, _ in top):
        top.append((record.token_id, record.logprob))
    return top


def chat_content(text_of: TokenText, records: list[TokenLogprob], k: int) -> list[dict]:
    """OpenAI's chat `logprobs.content` entries."""
    def entry(token_id: int, logprob: float) -> dict:
        text = text_of(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return [{**entry(r.token_id, r.logprob), "top_logprobs": [entry(t, lp) for t, lp in r.top[:k]]}
            for r in records]


def completion_object(text_of: TokenText, records: list[TokenLogprob | None], k: int, token_ids: list[int],
                      offset: int = 0) -> dict:
    """The legacy completions `logprobs` object for `token_ids` (a None record: the prompt's
    first token, which has no logprob); text offsets count from `offset`."""
    tokens, offsets = [], []
    for token_id in token_ids:
        tokens.append(text_of(token_id))
        offsets.append(offset)
        offset += len(tokens[-1])
    return {
        "tokens": tokens,
        "token_logprobs": [None if r is None else r.logprob for r in records],
        "top_logprobs": [None if r is None else {text_of(t): lp for t, lp in _top(r, k)} for r in records],
        "text_offset": offsets,
    }


def vllm_prompt_logprobs(text_of: TokenText, records: list[TokenLogprob | None], k: int) -> list[dict | None]:
    """vLLM's `prompt_logprobs`: per prompt token, None first, else {token id: {logprob, rank,
    decoded_token}} over the top k and the token itself."""
    out: list[dict | None] = []
    for r in records:
        if r is None:
            out.append(None)
            continue
        entries = {}
        for rank, (t, lp) in enumerate(r.top[:k], start=1):
            entries[str(t)] = {"logprob": lp, "rank": rank, "decoded_token": text_of(t)}
        entries.setdefault(str(r.token_id), {"logprob": r.logprob, "rank": r.rank, "decoded_token": text_of(r.token_id)})
        out.append(entries)
    return out


def merge(a: dict | None, b: dict) -> dict:
    """Two completions logprobs objects as one (prompt's, then the generated tokens')."""
    if a is None:
        return b
    return {key: a[key] + b[key] for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}


class CompletionScoring:
    """What one completions choice shows beyond its generated text: the prompt (`echo`), the
    logprobs object, vLLM's `prompt_logprobs`; `prompt_only` (max_tokens 0) drops the one
    token generated."""

    def __init__(self, tokenizer, gen, body):
        self.text_of, self.gen = TokenText(tokenizer), gen
        self.k = None if body.logprobs is None else int(body.logprobs)
        self.echo, self.prompt_only = bool(body.echo), body.max_tokens == 0
        self.vllm_k = body.prompt_logprobs
        self._tokenizer, self._offset = tokenizer, 0

    def head(self) -> tuple[str, dict | None]:
        """The echoed prompt and its logprobs (after the engine's first output)."""
        if not self.echo:
            return "", None
        spec = self.gen.spec
        text = spec.prompt_text if spec.prompt_text is not None else self._tokenizer.decode(spec.tokens)
        obj = None
        if self.k is not None:
            obj = completion_object(self.text_of, self.gen.prompt_logprobs, self.k, spec.tokens)
        self._offset = len(text)
        return text, obj

    def delta(self, text: str, token_ids: list[int], records: list) -> tuple[str, dict | None]:
        """Generated text and its tokens' logprobs object."""
        if self.prompt_only:
            return "", None
        obj = None
        if self.k is not None:
            obj = completion_object(self.text_of, records, self.k, token_ids, self._offset)
            self._offset += sum(len(t) for t in obj["tokens"])
        return text, obj

    def prompt_logprobs(self) -> list | None:
        if self.vllm_k is None or self.gen.prompt_logprobs is None:
            return None
        return vllm_prompt_logprobs(self.text_of, self.gen.prompt_logprobs, self.vllm_k)

    def whole(self, text: str) -> tuple[str, dict | None]:
        """The whole choice (not streamed): prompt, then everything generated."""
        head, head_obj = self.head()
        tail, tail_obj = self.delta(text, self.gen.token_ids, self.gen.logprobs)
        return head + tail, (merge(head_obj, tail_obj) if tail_obj is not None else head_obj)

    @property
    def active(self) -> bool:
        return self.echo or self.k is not None or self.vllm_k is not None


def text_choice(scoring: CompletionScoring, text: str, index: int):
    """One whole completions choice (not streamed)."""
    from promptcache.server.openai.schema import TextChoice

    text, obj = scoring.whole(text)
    reason = "length" if scoring.prompt_only else scoring.gen.finish_reason
    return TextChoice(index=index, text=text, logprobs=obj, prompt_logprobs=scoring.prompt_logprobs(),
                      finish_reason=reason)


def shared_usage(usage, scoring: CompletionScoring):
    """Usage of several choices; prompts scored alone (max_tokens 0) show no completion."""
    if scoring.prompt_only:
        usage.completion_tokens, usage.total_tokens = 0, usage.prompt_tokens
    return usage


def chat_choice(gen) -> dict | None:
    """A whole chat reply's `logprobs` (None unless asked for)."""
    k = gen.spec.sampling.logprobs
    if k is None:
        return None
    return {"content": chat_content(TokenText(gen.state.engine.tokenizer), gen.logprobs, k), "refusal": None}


def chat_prompt_logprobs(gen) -> list | None:
    k = gen.spec.sampling.prompt_logprobs
    if k is None or gen.prompt_logprobs is None:
        return None
    return vllm_prompt_logprobs(TokenText(gen.state.engine.tokenizer), gen.prompt_logprobs, k)
