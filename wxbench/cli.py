"""The ``wxbench`` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .data.benchmarks import BUILTIN_BENCHMARKS, DEFAULT_BENCHMARK
from .errors import DataError, WxbenchError
from .executors import EXECUTORS
from .profiles import DEFAULT_PROFILE, PROFILES
from .results import DEFAULT_OUTPUT


#: exit codes: 0 every run succeeded; 1 at least one run failed (the others were still run, written and
#: ranked); 2 wxbench refused the command before any work (bad option, unknown model, missing data)
EXIT_RUNS_FAILED = 1
EXIT_REFUSED = 2


class _Group(click.Group):
    """Turns wxbench's own errors into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WxbenchError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_REFUSED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wxbench")
def main() -> None:
    """wxbench: a plugin-based benchmark harness for data-driven weather forecasting.

    Every model family is a plugin (entry-point group ``wxbench``); all run under the same frozen
    splits and budgets and are scored in physical units into leaderboards.

    \b
    Quick start:
      wxbench run --all          train and score every model on the embedded default data
      wxbench plugins            what is installed and what each plugin registered
      wxbench leaderboard DIR    tables and plots from a results folder
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """Installed plugin distributions, their versions, what each registered, and load failures."""
    from .plugins import BUILTIN_PLUGIN, get_registry

    registry = get_registry()
    # the core's built-in plugin first, then the installed ones by name
    infos = sorted(registry.plugins.values(), key=lambda p: (p.name != BUILTIN_PLUGIN, p.name))
    if as_json:
        click.echo(json.dumps([vars(p) for p in infos], indent=1))
        return
    for p in infos:
        click.echo(f"{p.name}  ({p.distribution or 'in-process'} {p.version or ''})".rstrip())
        if p.forecasters:
            click.echo(f"  forecasters: {', '.join(p.forecasters)}")
        if p.encoders:
            click.echo(f"  encoders:    {', '.join(p.encoders)}")
        if p.error:
            click.echo(f"  ERROR: {p.error}")
    if all(p.name == BUILTIN_PLUGIN for p in infos):
        click.echo("no wxbench plugins installed beside the built-in baselines (pip install ./plugins/spatial, ...)")


@main.command("list")
def list_models() -> None:
    """Registered forecasters and encoders, with family and normalisation."""
    from tabulate import tabulate

    from .plugins import get_registry

    registry = get_registry()
    rows = [[r.name, "forecaster", r.cls.family, r.cls.normalisation,
             "ensemble" if r.cls.probabilistic else "deterministic", r.plugin] for r in registry.forecasters.values()]
    rows += [[r.name, "encoder", r.cls.family, r.cls.normalisation, "-", r.plugin] for r in registry.encoders.values()]
    click.echo(tabulate(sorted(rows, key=lambda r: (r[1], r[2], r[0])),
                        headers=["name", "kind", "family", "normalisation", "output", "plugin"]))


def _parse_overrides(items: tuple[str, ...]) -> dict[str, dict[str, object]]:
    """``-H model.key=value`` (value parsed as JSON when it can be) -> {model: {key: value}}."""
    from .errors import ConfigError

    out: dict[str, dict[str, object]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"-H {item!r}: expected MODEL.HYPERPARAMETER=VALUE, e.g. -H convlstm.hidden=32")
        key, value = item.split("=", 1)
        model, name = key.split(".", 1)
        try:
            parsed: object = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(model, {})[name] = parsed
    return out


class SeedList(click.ParamType):
    """``--seeds 0,1,2`` (or ``"0 1 2"``): several seeds in one value."""

    name = "seeds"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        words = value.replace(",", " ").split()
        try:
            seeds = [int(w) for w in words]
        except ValueError:
            self.fail(f"{value!r}: expected integers separated by commas, e.g. --seeds 0,1,2", param, ctx)
        if not seeds:
            self.fail("no seed given, e.g. --seeds 0,1,2", param, ctx)
        return seeds


@main.command()
@click.option("--all", "run_all", is_flag=True, help="Run every registered forecaster.")
@click.option("-m", "--model", "models", multiple=True, help="A model to run (repeatable).")
@click.option("--benchmark", default=DEFAULT_BENCHMARK, show_default=True,
              help=f"Built-in benchmark ({', '.join(BUILTIN_BENCHMARKS)}) or a benchmark .toml file.")
@click.option("--data-path", default=None, help="Location of WB1/WB2 data for the wb1/wb2 benchmarks.")
@click.option("--climatology", "climatology_path", default=None,
              help="A WB2 climatology store (zarr: dayofyear x hour x grid) for ACC and the climatology baseline, "
                   "instead of the one computed from the training years.")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, type=click.Choice(list(PROFILES)),
              help="Training budget profile.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--seed", "seeds", multiple=True, type=int, help="Seed (repeatable; default 0).")
@click.option("--seeds", "seed_list", type=SeedList(), default=None, help="Several seeds at once: --seeds 0,1,2.")
@click.option("--output", default=DEFAULT_OUTPUT, show_default=True, type=click.Path(file_okay=False),
              help="Results folder (one JSON per model and seed).")
@click.option("--resume", is_flag=True, help="Skip models whose successful result already exists.")
@click.option("--ensemble-size", type=int, default=None, help="Members for probabilistic models (default: profile's).")
@click.option("-H", "--hyperparameter", "hparams", multiple=True, help="Override: MODEL.KEY=VALUE (repeatable).")
@click.option("--save-forecasts", is_flag=True, help="Also write test forecasts in the WB2 forecast layout.")
@click.option("--no-checkpoint", is_flag=True, help="Do not keep trained weights.")
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default="local", show_default=True,
              help="local: in-process, one model after another; ray: one Ray task per run.")
@click.option("--address", default=None, help="Ray cluster address (ray executor; default: start a local Ray).")
@click.option("--retries", default=0, show_default=True, help="Ray executor: retries of a task that dies.")
@click.option("--no-leaderboard", is_flag=True, help="Do not build the leaderboard after the run.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (for CI logs).")
def run(run_all, models, benchmark, data_path, climatology_path, profile, device, seeds, seed_list, output, resume, ensemble_size,
        hparams, save_forecasts, no_checkpoint, executor, address, retries, no_leaderboard, quiet) -> None:
    """Train and score models on one benchmark and profile, then build its leaderboard.

    Each model runs isolated: a failure becomes an error row and the run goes on. All checks of
    the options happen before any work starts.
    """
    from .data.benchmarks import get_benchmark
    from .errors import ConfigError
    from .plugins import get_registry
    from .progress import set_quiet
    from .executors import load_executor
    from .runner import plan_tasks
    from .runtime import resolve_device

    set_quiet(quiet)
    registry = get_registry()
    if run_all and models:
        raise ConfigError("give either --all or -m/--model, not both")
    if not run_all and not models:
        raise ConfigError("nothing to run: give --all or -m MODEL (see `wxbench list`)")
    names = sorted(registry.forecasters) if run_all else list(models)
    for name in names:
        registry.forecaster(name)  # unknown names fail here, with a did-you-mean
    executor_options = {"address": address, "retries": retries} if executor == "ray" else {}
    if executor != "ray" and (address is not None or retries):
        raise ConfigError("--address and --retries are options of the ray executor (--executor ray)")
    overrides = _parse_overrides(hparams)
    for name, values in overrides.items():  # -H cnn.widht=3 fails here, not in 23 error rows later
        reg = registry.forecaster(name)
        reg.cls.check_hyperparameters(values, name)
    bench = get_benchmark(benchmark, data_path)
    _check_data_location(bench)
    if climatology_path is not None:
        from dataclasses import replace

        remote = "://" in climatology_path
        bench = replace(bench, climatology=climatology_path if remote else str(Path(climatology_path).expanduser()
                                                                              .resolve()))
    if bench.climatology is not None:  # a store on another grid or calendar fails here, before any work
        from .data.climatology import check_wb2_climatology

        check_wb2_climatology(bench.climatology, bench.channels, bench.step_hours)
    if executor != "ray":  # a Ray head node may have no GPU; the Ray executor checks the cluster
        resolve_device(device)  # --device cuda without CUDA fails before any work
    seed_values = list(seeds) + (seed_list or [])
    seed_values = sorted(set(seed_values)) or [0]
    failed = [p for p in registry.plugins.values() if p.error]
    for p in failed:
        click.echo(f"warning: {p.error}", err=True)
    tasks = [t for t in plan_tasks(names, bench, profile, seed_values, device=device, output=output,
                                    ensemble_size=ensemble_size, save_forecasts=save_forecasts,
                                    save_checkpoint=not no_checkpoint)]
    tasks = [t if t.model not in overrides else _with_overrides(t, overrides[t.model]) for t in tasks]
    started = time.perf_counter()
    results = load_executor(executor)(tasks, resume=resume, progress=not quiet, **executor_options)
    bad = [r for r in results if r.get("status") != "ok"]
    click.echo(f"{len(results) - len(bad)} of {len(results)} runs succeeded in {time.perf_counter() - started:.0f} s; "
               f"results in {output}")
    for r in bad:
        click.echo(f"  error: {r['error']['message'].splitlines()[0]}", err=True)
    for r in results:
        if r.get("checkpoint_error"):
            click.echo(f"  warning: model {r['model']!r} was scored, but its {r['checkpoint_error']}", err=True)
    if not no_leaderboard:
        from .leaderboard import build_leaderboards

        skipped: list = []
        for path in build_leaderboards(output, skipped=skipped):
            click.echo(f"leaderboard: {path}")
            if not quiet:
                click.echo(path.read_text().split("\n## ")[0])
        _report_skipped(skipped)
    if bad:  # the other runs are written and on the leaderboard; a script or CI must still see it
        sys.exit(EXIT_RUNS_FAILED)


def _check_data_location(bench) -> None:
    """A local --data-path that does not exist, or a remote one whose protocol needs a missing package
    (gcsfs, s3fs), fails here, before any work (a remote store's existence is checked when it is read)."""
    if bench.path is not None:
        from .data.stores import filesystem, is_remote, location_exists

        what = f"benchmark {bench.name!r}: data path"
        filesystem(bench.path, what)
        if not is_remote(bench.path) and not location_exists(bench.path, what):
            raise DataError(f"{what} {bench.path} does not exist")


def _report_skipped(skipped: list) -> None:
    if skipped:
        click.echo(f"skipped {len(skipped)} result file(s) that are not results of this wxbench:", err=True)
        for path, reason in skipped:
            click.echo(f"  {path}: {reason}", err=True)


def _with_overrides(task, hp):
    from dataclasses import replace

    return replace(task, hyperparameters={**task.hyperparameters, **hp})


@main.command()
@click.argument("results", default=DEFAULT_OUTPUT, type=click.Path(exists=True, file_okay=False))
@click.option("--output", default=None, help="Where to write (default: RESULTS/leaderboards).")
@click.option("--no-plots", is_flag=True, help="Tables only.")
def leaderboard(results: str, output: str | None, no_plots: bool) -> None:
    """Build Markdown/CSV/JSON leaderboards and PNG plots from a results folder."""
    from .leaderboard import build_leaderboards

    skipped: list = []
    written = build_leaderboards(results, output, plots=not no_plots, skipped=skipped)
    _report_skipped(skipped)
    if not written:
        click.echo(f"no result files under {results}")
    for path in written:
        click.echo(str(path))


@main.command()
@click.argument("result_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", default="auto", show_default=True)
def score(result_file: str, device: str) -> None:
    """Re-score a trained model from its checkpoint (the .pt beside RESULT_FILE) without retraining."""
    from .scoring import rescore

    click.echo(json.dumps(rescore(Path(result_file), device=device), indent=1))


@main.command("evaluate")
@click.argument("forecast")
@click.option("--benchmark", default=DEFAULT_BENCHMARK, show_default=True,
              help=f"Built-in benchmark ({', '.join(BUILTIN_BENCHMARKS)}) or a benchmark .toml file.")
@click.option("--data-path", default=None, help="Location of WB1/WB2 data for the wb1/wb2 benchmarks.")
@click.option("--name", default=None, help="Model name on the leaderboard (default: the file's name).")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, type=click.Choice(list(PROFILES)),
              help="The leaderboard (benchmark, profile) the forecast joins.")
@click.option("--output", default=DEFAULT_OUTPUT, show_default=True, type=click.Path(file_okay=False),
              help="Results folder.")
@click.option("--no-leaderboard", is_flag=True, help="Do not rebuild the leaderboard.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def evaluate_command(forecast, benchmark, data_path, name, profile, output, no_leaderboard, quiet) -> None:
    """Score a forecast made elsewhere: FORECAST is a zarr in the WeatherBench 2 forecast layout (local or
    gs://, s3://, https://) covering the benchmark's test initialisations and lead times. Its result is
    ranked beside the trained models, marked external."""
    from .data.benchmarks import get_benchmark
    from .data.stores import filesystem
    from .external import evaluate_forecast_file
    from .progress import set_quiet

    set_quiet(quiet)
    bench = get_benchmark(benchmark, data_path)
    _check_data_location(bench)
    filesystem(forecast, "forecast file")
    result = evaluate_forecast_file(forecast, bench, name=name, profile=profile, output=output,
                                    progress=not quiet)
    click.echo(f"{result['model']}: {result['test_windows']} test initialisations scored; results in {output}")
    if not no_leaderboard:
        from .leaderboard import build_leaderboards

        skipped: list = []
        for path in build_leaderboards(output, skipped=skipped):
            click.echo(f"leaderboard: {path}")


@main.command("export")
@click.argument("out", type=click.Path(dir_okay=True, file_okay=False))
@click.option("--benchmark", default=DEFAULT_BENCHMARK, show_default=True,
              help=f"Built-in benchmark ({', '.join(BUILTIN_BENCHMARKS)}) or a benchmark .toml file.")
@click.option("--data-path", default=None, help="Location of WB1/WB2 data for the wb1/wb2 benchmarks.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def export_command(out, benchmark, data_path, split, quiet) -> None:
    """Write a split's scored truth to OUT (a zarr in the WB2 observation layout) and the benchmark's
    climatology beside it (OUT's name + .climatology.zarr), for WeatherBench 2's own evaluation."""
    from .data.benchmarks import get_benchmark
    from .external import export_split
    from .progress import set_quiet

    set_quiet(quiet)
    bench = get_benchmark(benchmark, data_path)
    _check_data_location(bench)
    for kind, path in export_split(bench, split, out, progress=not quiet).items():
        click.echo(f"{kind}: {path}")


@main.group()
def data() -> None:
    """Prepare and inspect benchmark data."""


@data.command()
@click.option("--benchmark", default=DEFAULT_BENCHMARK, show_default=True)
@click.option("--force", is_flag=True, help="Regenerate even when a complete cache exists.")
@click.option("--processes", default=2, show_default=True, help="Parallel simulation processes.")
@click.option("-q", "--quiet", is_flag=True)
def prepare(benchmark: str, force: bool, processes: int, quiet: bool) -> None:
    """Generate and cache an embedded benchmark's data (the default needs a few minutes once)."""
    from .data.benchmarks import get_benchmark
    from .data.embedded import dataset_path, marker_path, prepare as do_prepare
    from .errors import ConfigError

    bench = get_benchmark(benchmark)
    if bench.source != "embedded":
        raise ConfigError(f"benchmark {bench.name!r} reads {bench.source} files; only embedded benchmarks are prepared")
    start = time.perf_counter()
    path = do_prepare(bench, force=force, progress=not quiet, processes=processes)
    marker = json.loads(marker_path(dataset_path(bench)).read_text())
    click.echo(f"{path} ready ({time.perf_counter() - start:.0f} s now; generation took "
               f"{marker['generation_seconds']} s); {marker['content_hash']}")


@data.command()
@click.option("--benchmark", default=DEFAULT_BENCHMARK, show_default=True)
@click.option("--data-path", default=None)
@click.option("--json", "as_json", is_flag=True)
def info(benchmark: str, data_path: str | None, as_json: bool) -> None:
    """Variables, periods, sizes, hash and statistics of a benchmark's data."""
    from tabulate import tabulate

    from .data.benchmarks import get_benchmark
    from .data.loading import load_benchmark

    bench = get_benchmark(benchmark, data_path)
    details = load_benchmark(bench).info()
    if as_json:
        click.echo(json.dumps(details, indent=1))
        return
    click.echo(f"{details['benchmark']}: {bench.description}")
    click.echo(f"source: {details['source']}\nhash:   {details['data_hash']}\ngrid:   {details['grid']}")
    click.echo(tabulate([[k, v["start"], v["end"], v["states"], v["windows"], v["megabytes"]]
                         for k, v in details["splits"].items()],
                        headers=["split", "start", "end", "states", "windows", "MiB"]))
    click.echo(tabulate([[c, s["mean"], s["std"], s["min"], s["max"]] for c, s in details["stats"].items()],
                        headers=["channel (train)", "mean", "std", "min", "max"], floatfmt=".4g"))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--compare-fail", default="median:25%", show_default=True,
              help="Fail when a benchmark is this much slower than the previous run on this machine "
                   "(pytest-benchmark's --benchmark-compare-fail); 'none' compares without failing.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def bench(compare_fail: str, pytest_args: tuple[str, ...]) -> None:
    """Run the speed suite (tests/benchmarks): save the run, compare with this machine's previous one.

    The first run on a machine only saves. Extra arguments go to pytest, e.g. `wxbench bench -k forward`.
    """
    from .bench import run_bench

    sys.exit(run_bench(list(pytest_args), compare_fail=None if compare_fail == "none" else compare_fail))


@main.command()
def benchmarks() -> None:
    """Built-in benchmarks and their splits."""
    from tabulate import tabulate

    click.echo(tabulate([[b.key, b.source, ",".join(b.channels), " .. ".join(b.train), " .. ".join(b.val),
                          " .. ".join(b.test)] for b in BUILTIN_BENCHMARKS.values()],
                        headers=["benchmark", "source", "channels", "train", "val", "test"]))


if __name__ == "__main__":
    main()
