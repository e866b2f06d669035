"""A single server never imports Ray: Ray is only for `serve --replicas` (the `ray` extra)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import promptcache.server.app, promptcache.cli.main, promptcache.cli.serve
from promptcache.cli.main import app
import promptcache.scaleout, promptcache.scaleout.scoring, promptcache.scaleout.book, promptcache.scaleout.launch
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print(loaded)
"""


def test_the_server_and_the_cli_import_no_ray():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
