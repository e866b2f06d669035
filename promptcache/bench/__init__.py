"""`promptcache bench`: drive any OpenAI-compatible server with a seeded workload and measure
time-to-first-token, inter-token latency and total latency per request (see cli/bench.py)."""
