"""`promptcache analyze`: what prompt caching would save on a user's own logged traffic.

logs.py reads JSON lines into dialect-neutral requests (dialects.py), render.py tokenizes them
as the server does, whatif.py replays them through the prefix cache core over a grid of
settings, lint.py finds what makes prompts diverge early, report.py, plots.py and html.py
present the results.
"""
