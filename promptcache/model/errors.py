"""Errors raised while finding and opening a model.

Every message is one line meant for a user: the CLI prints `str(error)` and exits 1 without a
traceback, so a message must name what was looked for (a path, a package file, an architecture)
and say what was wrong with it.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class: the model could not be found, read or used."""


class ModelNotFoundError(ModelError):
    """Nothing at the path (or embedded package file) the caller asked for."""


class ModelFormatError(ModelError):
    """The files exist but are not a readable checkpoint: corrupt or truncated GGUF, a
    config.json missing required keys, a directory with no safetensors, ..."""


class UnsupportedModelError(ModelError):
    """A readable checkpoint of an architecture this server cannot run."""
