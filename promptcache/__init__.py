"""promptcache: an LLM inference server built around prompt caching."""

__version__ = "0.1.0"
