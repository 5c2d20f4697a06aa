"""Leaderboards from result files: Markdown (tabulate), CSV, JSON and PNG plots.

Headline score (what the ranking uses): for each variable, the latitude-weighted RMSE at the last
lead time (24 h) divided by the climatology baseline's RMSE for that variable at that lead, then
averaged over variables. Below 1 beats climatology; lower is better. When the climatology row is
missing or failed, the divisor is the variable's training-split standard deviation instead, and the
column header says so. Several seeds: mean and standard deviation across seeds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .results import load_results, write_atomic

UNITS = {"z": "m²/s²", "t": "K", "u": "m/s", "v": "m/s", "q": "kg/kg", "t2m": "K", "u10": "m/s", "v10": "m/s",
         "msl": "Pa", "tp": "m"}


def unit_of(channel: str) -> str:
    if channel in UNITS:
        return UNITS[channel]
    return UNITS.get(channel.rstrip("0123456789"), "")


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _fmt(mean: float, std: float, n: int, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}g}" if abs(mean) < 1e4 else f"{mean:.0f}"
    return f"{text} ± {std:.2g}" if n > 1 else text


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model (seeds aggregated), ranked by the headline score; error rows last."""
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_model[r["model"]].append(r)
    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        channels, last = [], -1
    else:
        channels, last = ok[0]["channels"], len(ok[0]["lead_hours"]) - 1
    clim = [r for r in ok if r["model"] == "climatology"]
    divisor, divisor_name = {}, "climatology RMSE"
    if clim:
        divisor = {c: float(np.mean([r["scores"]["rmse"][c][last] for r in clim])) for c in channels}
    elif ok:
        divisor_name = "training std"
        stats = ok[0].get("data_stats", {})
        divisor = {c: stats.get(c, {}).get("std", float("nan")) for c in channels}
    rows = []
    for model, runs in sorted(by_model.items()):
        good = [r for r in runs if r.get("status") == "ok"]
        first = good[0] if good else runs[0]
        row: dict[str, Any] = {"model": model, "family": first.get("family", "?"), "seeds": len(runs),
                               "ok_seeds": len(good), "status": "ok" if good else "error",
                               "weights": first.get("weights", "-"), "plugin": first.get("provenance", {}).get("plugin")}
        if not good:
            row["error"] = first.get("error", {}).get("message", "unknown error")
            rows.append(row)
            continue
        if len(good) < len(runs):
            row["error"] = f"{len(runs) - len(good)} of {len(runs)} seeds failed: " + next(
                r["error"]["message"] for r in runs if r.get("status") != "ok")
        headline = [np.mean([r["scores"]["rmse"][c][last] / divisor[c] for c in channels]) for r in good]
        row["headline"], row["headline_std"] = _mean_std(headline)
        for metric in ("rmse", "mae", "bias", "acc", "crps", "crps_standard", "spread_skill", "ensemble_mean_rmse"):
            if metric not in good[0]["scores"]:
                continue
            for c in channels:
                per_lead = np.array([r["scores"][metric][c] for r in good], dtype=float)  # (seeds, leads)
                row[f"{metric}/{c}"] = per_lead.mean(axis=0).tolist()
                row[f"{metric}/{c}/std"] = (per_lead.std(axis=0, ddof=1) if len(good) > 1
                                            else np.zeros(per_lead.shape[1])).tolist()
        row["is_ensemble"] = good[0].get("is_ensemble", False)
        for key in ("samples_per_second", "train_seconds", "eval_seconds"):
            row[key] = float(np.mean([r["throughput"][key] for r in good]))
        row["wall_seconds"] = float(np.mean([r["wall_seconds"] for r in good]))
        row["parameters"] = good[0].get("model_info", {}).get("parameters")
        row["reconstruction_rmse"] = good[0].get("model_info", {}).get("reconstruction_rmse")
        row["stopped_because"] = good[0].get("fit", {}).get("stopped_because")
        row["device_name"] = good[0].get("provenance", {}).get("device_name")
        rows.append(row)
    rows.sort(key=lambda r: (r["status"] != "ok", r.get("headline", math.inf), r["model"]))
    rank = 0
    for row in rows:
        if row["status"] == "ok":
            rank += 1
            row["rank"] = rank
    for row in rows:
        row["_meta"] = {"channels": channels, "lead_index": last, "divisor": divisor_name}
    return rows


def markdown_table(rows: list[dict[str, Any]], *, title: str, lead_hours: list[int], provenance: dict[str, Any]) -> str:
    from tabulate import tabulate

    if not rows:
        return f"# {title}\n\nNo results.\n"
    meta = rows[0]["_meta"]
    channels, last = meta["channels"], meta["lead_index"]
    lead = lead_hours[last] if lead_hours else "?"
    headers = ["#", "model", "family", f"score ↓ (RMSE {lead} h / {meta['divisor']})"]
    headers += [f"RMSE {lead} h {c} ({unit_of(c)})" for c in channels]
    headers += [f"ACC {lead} h (mean)", f"CRPS {lead} h {channels[0] if channels else ''}", "spread/skill",
                "train s", "samples/s", "params", "weights"]
    table = []
    for r in rows:
        if r["status"] != "ok":
            continue
        n = r["ok_seeds"]
        acc = [r[f"acc/{c}"][last] for c in channels if f"acc/{c}" in r]
        crps = r.get(f"crps/{channels[0]}")
        table.append([
            r["rank"], r["model"], r["family"], _fmt(r["headline"], r["headline_std"], n),
            *[_fmt(r[f"rmse/{c}"][last], r[f"rmse/{c}/std"][last], n) for c in channels],
            f"{np.mean(acc):.3f}" if acc else "-",
            (_fmt(crps[last], 0.0, 1) + ("" if r["is_ensemble"] else " (=MAE)")) if crps else "-",
            f"{r[f'spread_skill/{channels[0]}'][last]:.2f}" if f"spread_skill/{channels[0]}" in r else "-",
            f"{r['train_seconds']:.0f}", f"{r['samples_per_second']:.0f}",
            _human(r["parameters"]), r["weights"],
        ])
    lines = [f"# {title}", "", tabulate(table, headers=headers, tablefmt="github"), ""]
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["## Errors", "", tabulate([[r["model"], r["error"].splitlines()[0][:300]] for r in errors],
                                          headers=["model", "error"], tablefmt="github"), ""]
    lines += ["## RMSE by lead time", ""]
    for c in channels:
        detail = [[r["model"], *[f"{v:.4g}" for v in r[f"rmse/{c}"]]] for r in rows if r["status"] == "ok"]
        lines += [f"### {c} ({unit_of(c)})", "",
                  tabulate(detail, headers=["model", *[f"{h} h" for h in lead_hours]], tablefmt="github"), ""]
    # the floor next to the forecast: how much of a latent model's error its autoencoder costs
    recon = [[r["model"], *[_floor_and_forecast(r["reconstruction_rmse"].get(c), r[f"rmse/{c}"][last])
                            for c in channels]]
             for r in rows if r["status"] == "ok" and r.get("reconstruction_rmse")]
    if recon:
        lines += ["## Autoencoder reconstruction floor",
                  "",
                  f"RMSE of encode-decode (as each model reports it: on validation fields for the WeatherDiff "
                  f"models) / the model's forecast RMSE at {lead} h.",
                  "",
                  tabulate(recon, headers=["model", *[f"{c} floor / {lead} h" for c in channels]],
                           tablefmt="github"), ""]
    timing = [[r["model"], f"{r['wall_seconds']:.0f}", f"{r['train_seconds']:.0f}", f"{r['eval_seconds']:.1f}",
               r["stopped_because"], r["device_name"]] for r in rows if r["status"] == "ok"]
    lines += ["## Time per model", "", tabulate(timing, headers=["model", "total s", "train s", "eval s", "training stopped by", "device"],
                                                tablefmt="github"), ""]
    lines += ["## Provenance", "", "```json", json.dumps(provenance, indent=1, default=str), "```", "",
              "Score: " + __doc__.split("Headline score (what the ranking uses): ")[1].split("\n\n")[0].replace("\n", " "),
              ""]
    return "\n".join(lines)


def _floor_and_forecast(floor: float | None, forecast: float) -> str:
    return f"{floor:.3g} / {forecast:.3g}" if floor is not None else f"- / {forecast:.3g}"


def _human(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def build_leaderboards(results_folder: str | Path, output: str | Path | None = None, *, plots: bool = True) -> list[Path]:
    """Write a leaderboard per (benchmark, profile) found in ``results_folder``; return the Markdown paths."""
    results = load_results(results_folder)
    output = Path(output) if output is not None else Path(results_folder) / "leaderboards"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["benchmark_key"], r["profile"])].append(r)
    written = []
    for (bench, profile), group in sorted(groups.items()):
        rows = summarise(group)
        folder = output / bench / profile
        ok = [r for r in group if r.get("status") == "ok"]
        lead_hours = ok[0]["lead_hours"] if ok else []
        provenance = _group_provenance(group)
        md = markdown_table(rows, title=f"wxbench leaderboard: {bench}, profile {profile}", lead_hours=lead_hours,
                            provenance=provenance)
        write_atomic(folder / "leaderboard.md", md.encode())
        clean = [{k: v for k, v in r.items() if k != "_meta"} for r in rows]
        write_atomic(folder / "leaderboard.json", json.dumps({"benchmark": bench, "profile": profile,
                                                               "provenance": provenance, "rows": clean},
                                                              indent=1, default=str).encode())
        write_atomic(folder / "leaderboard.csv", _csv(clean).encode())
        if plots and ok:
            from .plots import plot_leaderboard

            plot_leaderboard(rows, group, folder, lead_hours)
        written.append(folder / "leaderboard.md")
    return written


def _csv(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    flat = []
    for r in rows:
        out = {}
        for key, value in r.items():
            if isinstance(value, list):
                for i, v in enumerate(value):
                    out[f"{key}/{i}"] = v
            elif isinstance(value, dict):
                out[key] = json.dumps(value)
            else:
                out[key] = value
        flat.append(out)
    return pd.DataFrame(flat).to_csv(index=False)


def _group_provenance(group: list[dict[str, Any]]) -> dict[str, Any]:
    """What all results in a leaderboard share (and the set of values where they differ)."""
    keys = ("wxbench_version", "git_commit", "git_dirty", "data_hash", "device_name", "torch_version", "python_version", "platform")
    out: dict[str, Any] = {}
    for key in keys:
        values = sorted({str(r.get("provenance", {}).get(key)) for r in group})
        out[key] = values[0] if len(values) == 1 else values
    out["seeds"] = sorted({r["seed"] for r in group})
    out["budget"] = group[0].get("budget")
    out["total_wall_seconds"] = round(sum(r.get("wall_seconds", 0) for r in group), 1)
    return out
