"""`python -m promptcache.cli`: the same as the `promptcache` command."""

from promptcache.cli.main import app

app()
