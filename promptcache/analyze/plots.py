"""The analyze report's plots as PNG bytes: hit-ratio curves, block size, replicas."""

from __future__ import annotations

import io


def _figure(width: float = 7.5, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), layout="constrained")


def _png(plt, fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=96)
    plt.close(fig)
    return out.getvalue()


def hit_ratio_curves(report: dict) -> bytes:
    """Token hit ratio over cache size, one line per policy, the chosen setting marked."""
    plt, fig, ax = _figure()
    for policy, points in report["curves"].items():
        ax.plot([p["cache_mb"] for p in points], [100 * p["hit_ratio"] for p in points], marker="o", label=policy)
    s = report["settings"]
    ax.scatter([s["cache_mb"]], [100 * report["hit_ratio"]], marker="*", s=160, color="black", zorder=5,
               label=f"chosen ({s['policy']}, {s['cache_mb']:g} MiB)")
    ax.set_xscale("log")
    ax.set_xlabel("cache size (MiB, log scale)")
    ax.set_ylabel("prompt tokens served from cache (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("token hit ratio by cache size and eviction policy")
    return _png(plt, fig)


def block_sizes(report: dict) -> bytes:
    plt, fig, ax = _figure(5.0, 3.2)
    rows = report["block_sizes"]
    ax.bar([str(r["block_size"]) for r in rows], [100 * r["hit_ratio"] for r in rows], color="tab:blue")
    ax.set_xlabel("block size (tokens)")
    ax.set_ylabel("hit ratio (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"block size at {report['settings']['cache_mb']:g} MiB")
    return _png(plt, fig)


def replicas(report: dict) -> bytes:
    plt, fig, ax = _figure(5.0, 3.2)
    single = [r for r in report["replicas"] if r["replicas"] == 1]
    for routing in ("random", "prefix"):
        rows = single + [r for r in report["replicas"] if r["routing"] == routing and r["replicas"] > 1]
        ax.plot([r["replicas"] for r in rows], [100 * r["hit_ratio"] for r in rows], marker="o", label=f"{routing} routing")
    ax.set_xlabel("replicas (each with the chosen cache size)")
    ax.set_ylabel("hit ratio (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("replicas and routing")
    return _png(plt, fig)


PLOTS = {"curves": hit_ratio_curves, "block-sizes": block_sizes, "replicas": replicas}
