"""The bench plot: time-to-first-token of every request, in order, coloured by cached share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from promptcache.bench.runner import Row


def plot_ttft(rows: Sequence[Row], path: Path, title: str) -> None:
    """Write a PNG: one panel per endpoint, x = request in start order, y = TTFT (ms), colour =
    share of the prompt served from the cache (grey when the server does not report it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r.endpoint for r in rows))
    fig, axes = plt.subplots(len(labels), 1, figsize=(9, 3.2 * len(labels)), squeeze=False, sharey=True,
                             layout="constrained")
    scatter = None
    for ax, label in zip(axes[:, 0], labels):
        mine = sorted((r for r in rows if r.endpoint == label and r.ttft_s is not None), key=lambda r: r.start_s)
        xs = list(range(len(mine)))
        ys = [r.ttft_s * 1000 for r in mine]
        unknown = [i for i, r in enumerate(mine) if r.cached_share is None]
        known = [i for i, r in enumerate(mine) if r.cached_share is not None]
        if unknown:
            ax.scatter([xs[i] for i in unknown], [ys[i] for i in unknown], c="lightgrey", s=18, label="not reported")
            ax.legend(loc="upper right")
        if known:
            scatter = ax.scatter([xs[i] for i in known], [ys[i] for i in known],
                                 c=[mine[i].cached_share for i in known], cmap="viridis", vmin=0, vmax=1, s=18)
        ax.set_title(label)
        ax.set_xlabel("request (in start order)")
        ax.set_ylabel("time to first token (ms)")
        ax.grid(alpha=0.3)
    if scatter is not None:
        fig.colorbar(scatter, ax=axes[:, 0].tolist(), label="cached share of the prompt")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
