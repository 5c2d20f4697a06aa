"""Leaderboards from result files: Markdown (tabulate), CSV, JSON and PNG plots.

The ranking uses the headline score (:data:`HEADLINE`). Each result carries the reference scores it
is normalised by (``reference_scores``, computed by the runner beside every model), so the headline
of a model does not depend on which other results share its folder. Several seeds: mean and
standard deviation across seeds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_atomic
from .baselines import HEADLINE_REFERENCE
from .data.channels import units_label
from .metric_info import METRICS
from .results import load_results

#: how the headline score is defined; printed under every leaderboard
HEADLINE = (f"for each variable, the latitude-weighted RMSE at the last lead time divided by the "
            f"{HEADLINE_REFERENCE} baseline's RMSE for that variable and lead (on the same test split, "
            f"stored in each result as its reference scores), then averaged over variables. Below 1 "
            f"beats {HEADLINE_REFERENCE}; lower is better.")
#: the per-variable scores a leaderboard row carries, in table order
ROW_METRICS = ("rmse", "mae", "bias", "acc", "crps", "crps_standard", "spread_skill", "spread_skill_corrected",
               "ensemble_mean_rmse", "ensemble_mean_rmse_debiased")
#: the spread/skill the Markdown table shows: corrected for the ensemble size, so 1 is calibrated at any M
TABLE_SPREAD_SKILL = "spread_skill_corrected"


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _fmt(mean: float, std: float, n: int, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}g}" if abs(mean) < 1e4 else f"{mean:.0f}"
    return f"{text} ± {std:.2g}" if n > 1 else text


@dataclass
class Leaderboard:
    """The rows of one (benchmark, profile) leaderboard and the axes they are scored on."""

    rows: list[dict[str, Any]]
    channels: list[str]
    lead_hours: list[int]

    @property
    def last_lead(self) -> int:
        """Index of the lead time the headline uses (the last)."""
        return len(self.lead_hours) - 1


def headline_divisor(result: dict[str, Any], fallback: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
    """The reference RMSE (channel -> per lead) a result's headline divides by: the reference scores
    stored in the result, else (results written before wxbench stored them) the folder's
    climatology row, else None."""
    stored = result.get("reference_scores", {}).get(HEADLINE_REFERENCE, {}).get("rmse")
    return stored if stored is not None else fallback


def summarise(results: list[dict[str, Any]]) -> Leaderboard:
    """One row per model (seeds aggregated), ranked by the headline score; error rows last."""
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_model[r["model"]].append(r)
    ok = [r for r in results if r.get("status") == "ok"]
    channels = list(ok[0]["channels"]) if ok else []
    lead_hours = list(ok[0]["lead_hours"]) if ok else []
    last = len(lead_hours) - 1
    reference_rows = [r for r in ok if r["model"] == HEADLINE_REFERENCE]
    fallback = ({c: list(np.mean([r["scores"]["rmse"][c] for r in reference_rows], axis=0)) for c in channels}
                if reference_rows else None)
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
        divisors = [headline_divisor(r, fallback) for r in good]
        if any(d is None for d in divisors):
            row["headline"], row["headline_std"] = math.nan, 0.0
            row["headline_note"] = (f"no {HEADLINE_REFERENCE} reference scores: the result predates them and the "
                                    f"folder has no {HEADLINE_REFERENCE} row")
        else:
            headline = [np.mean([r["scores"]["rmse"][c][last] / d[c][last] for c in channels])
                        for r, d in zip(good, divisors)]
            row["headline"], row["headline_std"] = _mean_std(headline)
        for metric in ROW_METRICS:
            if metric not in good[0]["scores"]:
                continue
            for c in channels:
                per_lead = np.array([r["scores"][metric][c] for r in good], dtype=float)  # (seeds, leads)
                row[f"{metric}/{c}"] = per_lead.mean(axis=0).tolist()
                row[f"{metric}/{c}/std"] = (per_lead.std(axis=0, ddof=1) if len(good) > 1
                                            else np.zeros(per_lead.shape[1])).tolist()
        row["is_ensemble"] = good[0].get("is_ensemble", False)
        # a forecast scored from a file (wxbench evaluate) was not trained or timed here
        row["external"] = bool(good[0].get("external", False))
        for key in ("samples_per_second", "train_seconds", "eval_seconds"):
            values = [r["throughput"].get(key) for r in good]
            row[key] = float(np.mean(values)) if all(v is not None for v in values) else None
        row["wall_seconds"] = float(np.mean([r["wall_seconds"] for r in good]))
        row["parameters"] = good[0].get("model_info", {}).get("parameters")
        row["reconstruction_rmse"] = good[0].get("model_info", {}).get("reconstruction_rmse")
        row["stopped_because"] = good[0].get("fit", {}).get("stopped_because")
        row["device_name"] = good[0].get("provenance", {}).get("device_name")
        rows.append(row)
    rows.sort(key=lambda r: (r["status"] != "ok", _nan_last(r.get("headline", math.inf)), r["model"]))
    rank = 0
    for row in rows:
        if row["status"] == "ok":
            rank += 1
            row["rank"] = rank
    return Leaderboard(rows, channels, lead_hours)


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def markdown_table(board: Leaderboard, *, title: str, provenance: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows, channels, lead_hours, last = board.rows, board.channels, board.lead_hours, board.last_lead
    if not rows:
        return f"# {title}\n\nNo results.\n"
    lead = lead_hours[last] if lead_hours else "?"
    rmse, acc_info, crps_info, ss = METRICS["rmse"], METRICS["acc"], METRICS["crps"], METRICS[TABLE_SPREAD_SKILL]
    headers = ["#", "model", "family", f"score {rmse.arrow} (RMSE {lead} h / {HEADLINE_REFERENCE} RMSE)"]
    headers += [f"{rmse.label} {rmse.arrow} {lead} h {c} ({units_label(c)})" for c in channels]
    headers += [f"{acc_info.label} {acc_info.arrow} {lead} h (mean)",
                f"CRPS {crps_info.arrow} {lead} h {channels[0] if channels else ''}",
                f"{ss.label} {ss.arrow}", "train s", "samples/s", "params", "weights"]
    table = []
    for r in rows:
        if r["status"] != "ok":
            continue
        n = r["ok_seeds"]
        acc = [r[f"acc/{c}"][last] for c in channels if f"acc/{c}" in r]
        crps = r.get(f"crps/{channels[0]}")
        spread_skill = r.get(f"{TABLE_SPREAD_SKILL}/{channels[0]}")
        table.append([
            r["rank"], r["model"] + (" (external)" if r.get("external") else ""), r["family"],
            _fmt(r["headline"], r["headline_std"], n),
            *[_fmt(r[f"rmse/{c}"][last], r[f"rmse/{c}/std"][last], n) for c in channels],
            f"{np.mean(acc):.3f}" if acc else "-",
            (_fmt(crps[last], 0.0, 1) + ("" if r["is_ensemble"] else " (=MAE)")) if crps else "-",
            f"{spread_skill[last]:.2f}" if spread_skill else "-",
            _seconds(r["train_seconds"]), _seconds(r["samples_per_second"]),
            _human(r["parameters"]), r["weights"],
        ])
    lines = [f"# {title}", "", tabulate(table, headers=headers, tablefmt="github"), ""]
    notes = [[r["model"], r["headline_note"]] for r in rows if r.get("headline_note")]
    if notes:
        lines += ["## No headline score", "", tabulate(notes, headers=["model", "why"], tablefmt="github"), ""]
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["## Errors", "", tabulate([[r["model"], r["error"].splitlines()[0][:300]] for r in errors],
                                          headers=["model", "error"], tablefmt="github"), ""]
    lines += ["## RMSE by lead time", ""]
    for c in channels:
        detail = [[r["model"], *[f"{v:.4g}" for v in r[f"rmse/{c}"]]] for r in rows if r["status"] == "ok"]
        lines += [f"### {c} ({units_label(c)})", "",
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
    timing = [[r["model"], f"{r['wall_seconds']:.0f}", _seconds(r["train_seconds"]), _seconds(r["eval_seconds"], 1),
               r["stopped_because"], r["device_name"]] for r in rows if r["status"] == "ok"]
    lines += ["## Time per model", "", tabulate(timing, headers=["model", "total s", "train s", "eval s", "training stopped by", "device"],
                                                tablefmt="github"), ""]
    lines += ["## Provenance", "", "```json", json.dumps(provenance, indent=1, default=str), "```", "",
              f"Score: {HEADLINE}", ""]
    return "\n".join(lines)


def _seconds(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _floor_and_forecast(floor: float | None, forecast: float) -> str:
    return f"{floor:.3g} / {forecast:.3g}" if floor is not None else f"- / {forecast:.3g}"


def _human(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def build_leaderboards(results_folder: str | Path, output: str | Path | None = None, *, plots: bool = True,
                       skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Write a leaderboard per (benchmark, profile) found in ``results_folder``; return the Markdown paths.

    Result files that cannot be read (:func:`wxbench.results.load_results`) are left out; every
    leaderboard lists them with the reason, and ``skipped`` (if given) receives them.
    """
    skipped = [] if skipped is None else skipped
    results = load_results(results_folder, skipped=skipped)
    skipped_rows = [[str(Path(path).relative_to(results_folder)) if Path(path).is_relative_to(results_folder)
                     else str(path), reason] for path, reason in skipped]
    output = Path(output) if output is not None else Path(results_folder) / "leaderboards"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["benchmark_key"], r["profile"])].append(r)
    written = []
    for (bench, profile), group in sorted(groups.items()):
        board = summarise(group)
        folder = output / bench / profile
        provenance = _group_provenance(group)
        md = markdown_table(board, title=f"wxbench leaderboard: {bench}, profile {profile}", provenance=provenance)
        if skipped_rows:
            from tabulate import tabulate

            md += (f"\n## Skipped result files\n\n{len(skipped_rows)} file(s) under the results folder could not be "
                   f"read as results of this wxbench and are not in the table:\n\n"
                   + tabulate(skipped_rows, headers=["file", "reason"], tablefmt="github") + "\n")
        write_atomic(folder / "leaderboard.md", md.encode())
        write_atomic(folder / "leaderboard.json", json.dumps({"benchmark": bench, "profile": profile,
                                                               "provenance": provenance, "headline": HEADLINE,
                                                               "rows": board.rows,
                                                               "skipped_files": [dict(zip(("file", "reason"), s))
                                                                                 for s in skipped_rows]},
                                                              indent=1, default=str).encode())
        write_atomic(folder / "leaderboard.csv", _csv(board.rows).encode())
        if plots and any(r["status"] == "ok" for r in board.rows):
            from .plots import plot_leaderboard

            plot_leaderboard(board.rows, group, folder, board.channels, board.lead_hours)
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
