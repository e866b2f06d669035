"""A real server on a free loopback port: uvicorn in a thread, serving a real engine.

Shared by the server tests and the benchmark's in-process mode. Running in a thread (not a
subprocess) lets tests load a model once and inspect the engine directly, while every byte
still travels over HTTP through uvicorn exactly as in production.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from promptcache.engine.engine import Engine
from promptcache.server.app import create_app, engine_from_settings
from promptcache.server.http_protocol import uvicorn_options
from promptcache.server.settings import ServerSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    engine: Engine
    settings: ServerSettings
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def model(self) -> str:
        return self.engine.model_name

    def client(self, api_key: str = "unused", **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(settings: ServerSettings, engine: Engine | None = None) -> LiveServer:
    """Serve `engine` (default: the one `settings` describe) until `stop()`."""
    engine = engine or engine_from_settings(settings)
    port = free_port()
    config = uvicorn.Config(
        create_app(engine, settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        **uvicorn_options(settings.http_limits()),  # the HTTP layer's bounds, as `promptcache serve` has them
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    return LiveServer(engine, settings, server, thread, port)


def with_template(model_dir, directory, template: str):
    """A copy of the Hugging Face model in `model_dir` under `directory`, with `template` as its
    chat template: a tiny model that renders like another family's."""
    import shutil
    from pathlib import Path

    shutil.copytree(model_dir, directory, dirs_exist_ok=True)
    (Path(directory) / "chat_template.jinja").write_text(template)
    return directory
