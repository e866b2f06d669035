"""`promptcache info`: what a model is, read from its metadata (weights are not loaded)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from promptcache.cli.errors import user_errors
from promptcache.cli.main import app


@app.command()
def info(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="GGUF file or Hugging Face directory (default: the embedded model).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda: the device the numerics class is for.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16: the dtype the numerics class is for.")] = "auto",
    quantize: Annotated[Optional[str], typer.Option(help="int8, int4, int8+head or int4+head: the decode quantization the numerics class is for.")] = None,
) -> None:
    """Architecture, layers, heads, KV bytes per token, context length, and the numerics class
    that cached KV is shared within (dtype, quantization, kernel family)."""
    from promptcache.engine.loading import resolve_device, resolve_dtype
    from promptcache.model.numerics import numerics_class
    from promptcache.model.quant import parse
    from promptcache.model.source import open_model

    with user_errors():
        source = open_model(model)
        dev = resolve_device(device)
        if quantize is not None:
            parse(quantize)
        numerics = numerics_class(resolve_dtype(dtype, dev), quantize, dev)
    c = source.config
    table = Table(title=source.name, show_header=False)
    rows = [
        ("path", str(source.path)),
        ("format", source.format),
        ("architecture", c.architecture),
        ("layers", str(c.num_layers)),
        ("attention heads", str(c.num_heads)),
        ("KV heads", str(c.num_kv_heads)),
        ("head dim", str(c.head_dim)),
        ("hidden size", str(c.hidden_size)),
        ("MLP size", str(c.intermediate_size)),
        ("vocabulary", str(c.vocab_size)),
        ("context length", str(c.context_length)),
        ("rope theta", f"{c.rope_theta:g}"),
        ("rope scaling", str(c.rope_scaling or "none")),
        ("tied embeddings", str(c.tie_word_embeddings)),
        ("KV bytes/token (bf16)", f"{c.kv_bytes_per_token(2):,}"),
        ("KV bytes/token (fp32)", f"{c.kv_bytes_per_token(4):,}"),
        ("chat template", "yes" if source.tokenizer.chat_template is not None else "no"),
        ("fingerprint", source.fingerprint[:16]),
        ("numerics", numerics),
    ]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
