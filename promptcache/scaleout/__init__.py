"""Scale-out: engine replicas as a Ray Serve application behind an exact prefix-aware router.

`promptcache serve --replicas N` (docs/deployment.md). Only the modules that say so import Ray
(`launch`, `router`, and `replica` at run time); `scoring` and `book` are pure Python, and a
single server never imports this package.
"""
