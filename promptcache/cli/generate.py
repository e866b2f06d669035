"""`promptcache generate`: run one prompt through the engine and stream the reply."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from promptcache.cli.errors import user_errors
from promptcache.cli.main import app

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="GGUF file or Hugging Face directory (default: the embedded SmolLM2-135M-Instruct).")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32 or bfloat16.")]


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    model: ModelOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    top_k: Annotated[int, typer.Option(min=0)] = 0,
    seed: Annotated[Optional[int], typer.Option()] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop string (repeatable).")] = None,
    chat: Annotated[Optional[bool], typer.Option("--chat/--no-chat", help="Wrap the prompt in the model's chat template (default: on when the model has one).")] = None,
    system: Annotated[Optional[str], typer.Option(help="System message (with --chat).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quantize: Annotated[Optional[str], typer.Option(help="int8 or int4: weight-only decode (CPU, bfloat16); int8+head or int4+head quantize the output head too.")] = None,
    decode_threads: Annotated[Optional[int], typer.Option("--decode-threads", min=1, help="CPU threads a decode step runs on (default: by model size).")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic/--no-deterministic", help="Batch-invariant decoding (docs/design.md).")] = True,
) -> None:
    """Generate a reply to PROMPT, streamed to the terminal as it is produced."""
    with user_errors():
        if not prompt.strip():  # before any import or load: bad input costs nothing
            raise ValueError("the prompt is empty")
    from promptcache.engine.api import Request, SamplingParams
    from promptcache.engine.engine import Engine

    with user_errors():
        engine = Engine.from_model(model, device=device, dtype=dtype, max_batch_size=1, progress=True,
                                   quantize=quantize, deterministic=deterministic, decode_threads=decode_threads)
        tokenizer = engine.tokenizer
        use_chat = tokenizer.chat_template is not None if chat is None else chat
        if use_chat:
            # The server's renderer: the same messages give the same tokens (and cache keys).
            from promptcache.server.chat import ChatRenderer
            from promptcache.server.openai_schema import ChatMessage

            messages = ([ChatMessage(role="system", content=system)] if system else []) + [
                ChatMessage(role="user", content=prompt)]
            ids = ChatRenderer(tokenizer).render(messages).tokens
        else:
            ids = tokenizer.encode(prompt)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                seed=seed, stop=tuple(stop or ()))
        engine.add_request(Request("cli", ids, params))
        while engine.has_unfinished():
            for out in engine.step():
                sys.stdout.write(out.new_text)
                sys.stdout.flush()
        sys.stdout.write("\n")
