"""Leaderboard plots (matplotlib, PNG): scores against lead time, and an example forecast per model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_leaderboard(rows: list[dict[str, Any]], results: list[dict[str, Any]], folder: Path,
                     channels: list[str], lead_hours: list[int]) -> None:
    """Scores against lead time (one panel per channel) and each model's example map.

    ``rows``: the leaderboard's rows (:func:`wxbench.leaderboard.summarise`); ``results``: the result
    files they summarise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.channels import units_label

    ok = [r for r in rows if r["status"] == "ok"]
    folder.mkdir(parents=True, exist_ok=True)
    for metric, label in (("rmse", "latitude-weighted RMSE"), ("crps", "CRPS (MAE for deterministic models)")):
        fig, axes = plt.subplots(1, len(channels), figsize=(4.2 * len(channels), 4.2), squeeze=False)
        for ax, c in zip(axes[0], channels):
            for i, r in enumerate(ok):
                ax.plot(lead_hours, r[f"{metric}/{c}"], marker="o", label=r["model"],
                        linestyle="-" if i < 10 else "--" if i < 20 else ":")
            ax.set_title(c)
            ax.set_xlabel("lead time (h)")
            ax.set_ylabel(f"{label} ({units_label(c)})")
            ax.set_xticks(lead_hours)
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        fig.savefig(folder / f"{metric}_vs_lead.png", dpi=90)
        plt.close(fig)
    maps = folder / "maps"
    maps.mkdir(exist_ok=True)
    for r in results:
        if r.get("status") != "ok" or r["seed"] != min(x["seed"] for x in results if x["model"] == r["model"]):
            continue
        example = Path(r["_path"]).with_suffix(".example.npz")
        if example.exists():
            plot_example(example, maps / f"{r['model']}.png", r["model"])


def plot_example(npz_path: Path, out: Path, model: str) -> None:
    """Truth, forecast and error at the last lead time, one row per variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.load(npz_path)
    forecast, truth = data["forecast"], data["truth"]
    if forecast.ndim == truth.ndim + 1:  # ensemble: show the ensemble mean
        forecast = forecast.mean(axis=0)
    channels = [str(c) for c in data["channels"]]
    lead = int(data["lead_hours"][-1])
    lon, lat = data["lon"], data["lat"]
    fig, axes = plt.subplots(len(channels), 3, figsize=(12, 2.6 * len(channels)), squeeze=False)
    for i, c in enumerate(channels):
        f, t = forecast[-1, i], truth[-1, i]
        lo, hi = float(min(f.min(), t.min())), float(max(f.max(), t.max()))
        err = f - t
        bound = float(np.abs(err).max()) or 1.0
        for j, (field, title, kw) in enumerate((
                (t, f"truth {c}", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                (f, f"{model} {c} +{lead} h", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                (err, "forecast - truth", {"vmin": -bound, "vmax": bound, "cmap": "RdBu_r"}))):
            mesh = axes[i][j].pcolormesh(lon, lat, field, shading="nearest", **kw)
            axes[i][j].set_title(title, fontsize=9)
            fig.colorbar(mesh, ax=axes[i][j], fraction=0.025)
    fig.suptitle(f"{model}: forecast initialised {data['time']} (+{lead} h)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
