"""The command line: workbench run | validate | plugins | report | compare | plot | dmesg.

argparse, from the standard library: subcommands, `--seed N` given several
times, and exit status 2 for bad usage out of the box, which is the
contract's status for bad usage and bad configs alike.
Exit status: 0 every run completed and every expectation held; 1 an
expectation failed or a run ended in "error"; 2 bad usage or a bad config;
128 + the signal's number after SIGINT, SIGTERM or SIGHUP (docs/running.md).
"""

from __future__ import annotations

# Only what catching a signal needs at import time: anything else is imported
# inside main(), where a Ctrl-C during the imports is only noted.
import sys

from workbench.interrupt import Interrupt

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from workbench.discovery import Plugins
    from workbench.experiment import Experiment

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    # Names and paths may not fit the terminal's encoding: escape, never crash.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        with Interrupt.handled():       # from here on a signal only sets a flag
            return _main(argv)
    except KeyboardInterrupt:           # a signal before the runs (imports, loading)
        return interrupted("interrupted", Interrupt.exit_status())
    except BrokenPipeError:            # `workbench ... | head`: stop quietly
        _silence(sys.stdout)
        return EXIT_FAILED
    except OSError as e:               # the output itself cannot be written (a full disk)
        try:
            print(f"workbench: {e.strerror or e}", file=sys.stderr)
        except OSError:
            pass
        _silence(sys.stdout, sys.stderr)
        return EXIT_FAILED


def _silence(*streams: object) -> None:
    """Point streams at /dev/null, so that Python's flush at exit cannot fail too."""
    import os
    for stream in streams:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        except (OSError, ValueError):
            pass


def interrupted(message: str, status: int) -> int:
    """Say so, and exit with status rather than by the signal."""
    print(f"\nworkbench: {message}", file=sys.stderr)
    return status


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Imported here, not at the top: `--help` and bad usage stay fast, and a
    # signal during these imports is only noted (main() reports it).
    plugins = _load_plugins(args)
    if plugins is None:
        return EXIT_USAGE
    Interrupt.check()
    return args.command(args, plugins, parser)


def _load_plugins(args: argparse.Namespace) -> Plugins | None:
    """The plugins the command and its config ask for; each one set aside
    is a warning, a built-in one or a bad plugin setting an error (None)."""
    from workbench.discovery import load_plugins, require
    from workbench.registry import PluginError
    settings = _plugin_settings(args)
    if settings is None:
        return None
    dirs, disable = settings
    try:
        plugins = load_plugins(plugins_dirs=dirs, disable=disable)
        require(plugins)
    except PluginError as e:
        print(f"workbench: {e}", file=sys.stderr)
        return None
    for broken in plugins.broken:
        print(f"workbench: warning: {broken}", file=sys.stderr)
    for name in sorted(set(disable) - set(plugins.disabled)):
        print(f"workbench: warning: disable: no plugin named {name!r} is installed",
              file=sys.stderr)
    return plugins


def _plugin_settings(args: argparse.Namespace) -> tuple[list[Path], list[str]] | None:
    """--plugins-dir (relative to the working directory) and the config's
    plugins_dir (relative to the config file) and disable keys."""
    from pathlib import Path

    from workbench import config as C
    dirs = [(d, "workbench: --plugins-dir") for d in getattr(args, "plugins_dir", None) or ()]
    disable: list[str] = []
    config = getattr(args, "config", None)
    data = C.read_toml(config, []) if config is not None else None
    args.config_data = data                  # parsed once: _load() uses it too
    problems: list[str] = []
    if isinstance(data, dict):       # an unreadable file is reported when it is loaded
        keys = {k: data[k] for k in ("plugins_dir", "disable") if k in data}
        settings = C.validate(C.PluginSettings, keys, str(config), problems)
        if settings is not None:
            dirs += [(config.parent / d, f"{config}: plugins_dir") for d in settings.plugins_dir]
            disable = settings.disable
    for path, where in dirs:
        if not path.is_dir():
            problems.append(f"{where}: {str(path)!r} is not a directory")
    for problem in problems:
        print(problem, file=sys.stderr)
    return None if problems else ([Path(p) for p, _ in dirs], disable)


def _plugin_options(p: argparse.ArgumentParser) -> None:
    from pathlib import Path
    p.add_argument("--plugins-dir", type=Path, action="append", metavar="DIR",
                   help="also load every NAME.py and package in DIR as a plugin (repeatable)")


def _parser() -> argparse.ArgumentParser:
    import argparse
    from pathlib import Path
    p = argparse.ArgumentParser(prog="workbench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment and print its outcomes")
    run.add_argument("config", type=Path, help="experiment file (TOML)")
    run.add_argument("--seed", type=_seed, action="append", metavar="N",
                     help="run this seed instead of the file's seeds (repeatable)")
    run.add_argument("--arm", action="append", metavar="NAME", help="run only this arm (repeatable)")
    run.add_argument("--scenario", action="append", metavar="NAME",
                     help="run only this scenario (repeatable)")
    run.add_argument("--out", type=_out, metavar="DIR", help="where the logs go (default: the "
                     "file's `out`, else runs/<file stem>)")
    run.add_argument("--jobs", type=_jobs, default=_cpus(), metavar="N",
                     help="runs in parallel processes (default: one per CPU; the logs are the "
                          "same whatever N)")
    run.add_argument("--run-timeout", type=_timeout, default=600.0, metavar="SECONDS",
                     help="end a run that takes longer than this in wall-clock time with "
                          "outcome error: a policy that never returns (default 600; 0: none)")
    run.add_argument("--quiet", action="store_true", help="print only the failed "
                     "expectations, the errors and the last line (for scripts)")
    _plugin_options(run)
    run.set_defaults(command=cmd_run)

    validate = sub.add_parser("validate", help="check an experiment file and its scenarios")
    validate.add_argument("config", type=Path)
    _plugin_options(validate)
    validate.set_defaults(command=cmd_validate)

    plugins = sub.add_parser("plugins", help="list plugins, policies, follow-ups and presets")
    plugins.add_argument("--format", choices=("text", "json"), default="text")
    _plugin_options(plugins)
    plugins.set_defaults(command=cmd_plugins)

    report = sub.add_parser("report", help="the run table again, from a run directory's logs")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.set_defaults(command=cmd_report)

    compare = sub.add_parser("compare", help="arms side by side over the seeds, from the logs")
    compare.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    compare.add_argument("--baseline", metavar="ARM", help="the arm the others are compared "
                         "with (default: the first arm of the first run directory)")
    compare.add_argument("--format", choices=("table", "markdown", "csv", "json"),
                         default="table")
    compare.set_defaults(command=cmd_compare)

    plot = sub.add_parser("plot", help="one picture per scenario, a panel per arm")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    plot.add_argument("-o", "--out", type=_out, metavar="DIR",
                      help="where the pictures go (default: RUN_DIR/plots)")
    plot.add_argument("--format", choices=("png", "svg"), default="png")
    plot.add_argument("--seed", type=_seed, metavar="N", help="plot this seed (default: the "
                      "lowest of each run)")
    plot.set_defaults(command=cmd_plot)

    dmesg = sub.add_parser("dmesg", help="a run's log as the kernel printed it")
    dmesg.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    dmesg.add_argument("--scenario", metavar="NAME", help="only this scenario")
    dmesg.add_argument("--arm", metavar="NAME", help="only this arm")
    dmesg.add_argument("--seed", type=_seed, metavar="N", help="only this seed")
    dmesg.set_defaults(command=cmd_dmesg)
    return p


def _number(text: str, lo: int, hi: int, what: str) -> int:
    """A plain decimal number (ASCII digits only, as in the config files)."""
    import argparse
    if text.isascii() and text.isdigit() and lo <= int(text) <= hi:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected {what} from {lo} to {hi}, got {text!r}")


def _seed(text: str) -> int:
    from workbench.config import SEED_MAX
    return _number(text, 0, SEED_MAX, "an integer")


def _jobs(text: str) -> int:
    return _number(text, 1, 1024, "a number of processes")


def _timeout(text: str) -> float:
    import argparse
    import math
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value <= 86400 * 7):
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 604800, got {text!r}")
    return value


def _out(text: str) -> Path:
    import argparse
    from pathlib import Path
    if not text:
        raise argparse.ArgumentTypeError("expected a directory, got ''")
    return Path(text)


def _cpus() -> int:
    import os
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _load(args: argparse.Namespace, plugins: Plugins) -> Experiment | None:
    """The experiment of args.config, from the text _plugin_settings() parsed
    (a file it could not parse is read again, to report why)."""
    from workbench.config import ConfigError
    from workbench.experiment import experiment_from_data, load_experiment
    path, data = args.config, args.config_data
    try:
        if isinstance(data, dict):
            return experiment_from_data(data, path, plugins)
        return load_experiment(path, plugins)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        n = len(e.problems)
        print(f"workbench: {path}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return None


def _select(names: list[str] | None, items: list, kind: str, parser: argparse.ArgumentParser) -> list:
    if not names:
        return items
    known = [i.name for i in items]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {kind} {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
    return [i for i in items if i.name in names]


def cmd_run(args: argparse.Namespace, plugins: Plugins, parser: argparse.ArgumentParser) -> int:
    from workbench import report
    from workbench.files import OutError, clear_logs, lock_out, prepare_out
    from workbench.runner import run_all
    exp = _load(args, plugins)
    if exp is None:
        return EXIT_USAGE
    Interrupt.check()
    scenarios = _select(args.scenario, list(exp.scenarios), "scenario", parser)
    arms = _select(args.arm, list(exp.arms), "arm", parser)
    seeds = list(dict.fromkeys(args.seed or exp.seeds))      # a seed given twice runs once
    out = args.out or exp.out
    try:
        prepare_out(out)
        lock = lock_out(out)
    except OutError as e:
        where = "--out" if args.out else f"{args.config}: out"
        print(f"workbench: {where}: {e}", file=sys.stderr)
        return EXIT_USAGE
    clear_logs(out)                 # an earlier invocation's logs would look like this one's
    table = report.Table(sys.stdout, [a.name for a in arms], quiet=args.quiet,
                         total=len(scenarios) * len(arms) * len(seeds))
    try:
        results, manifest = run_all(exp, scenarios, arms, seeds, out, plugins.describe(),
                                    args.jobs, table.row, args.run_timeout)
    except KeyboardInterrupt:
        return interrupted(f"interrupted; finished runs are in {out}", Interrupt.exit_status())
    finally:
        lock.close()
    table.end(out)
    failed = any(r.summary["outcome"] == "error" or r.summary["expect_failed"] for r in results)
    return EXIT_FAILED if failed or not manifest else EXIT_OK


def cmd_validate(args: argparse.Namespace, plugins: Plugins, parser: argparse.ArgumentParser) -> int:
    exp = _load(args, plugins)
    if exp is None:
        return EXIT_USAGE
    runs = len(exp.scenarios) * len(exp.arms) * len(exp.seeds)
    print(f"{args.config}: ok: {len(exp.scenarios)} scenarios x {len(exp.arms)} arms x "
          f"{len(exp.seeds)} seeds = {runs} runs")
    return EXIT_OK


def _run_logs(run_dir: Path) -> tuple[list, bool]:
    """The readable logs of run_dir; each unreadable one is named on stderr."""
    from workbench.logs import read_run_dir
    runs, problems = read_run_dir(run_dir)
    for problem in problems:
        print(f"workbench: {problem}", file=sys.stderr)
    return runs, not problems


def cmd_report(args: argparse.Namespace, plugins: Plugins, parser: argparse.ArgumentParser) -> int:
    """Every run's summary and outcome recomputed from its events alone."""
    from workbench import report
    runs, complete = _run_logs(args.run_dir)
    table = report.Table(sys.stdout)
    for run in runs:
        Interrupt.check()
        table.row(run)
    if runs:
        table.end(args.run_dir)
    failed = any(r.summary["outcome"] == "error" or r.summary["expect_failed"] for r in runs)
    return EXIT_FAILED if failed or not complete else EXIT_OK


def cmd_compare(args: argparse.Namespace, plugins: Plugins, parser: argparse.ArgumentParser) -> int:
    from workbench import compare
    runs, complete = [], True
    for run_dir in args.run_dirs:
        found, ok = _run_logs(run_dir)
        runs += found
        complete = complete and ok
    groups, notes = compare.group_runs(runs)
    for note in notes:
        print(f"workbench: {note}", file=sys.stderr)
    arms = list(dict.fromkeys(g.arm for g in groups))
    if args.baseline is not None and args.baseline not in arms:
        parser.error(f"--baseline: no arm {args.baseline!r} in these runs (arms: "
                     f"{', '.join(arms) or 'none'})")
    baseline = args.baseline or (_first_arm(args.run_dirs[0]) if arms else None)
    sys.stdout.write(compare.render(compare.rows(groups, baseline), args.format))
    return EXIT_OK if complete and not notes else EXIT_FAILED


def _first_arm(run_dir: Path) -> str | None:
    """The first arm of the run directory's experiment (its manifest), if it says."""
    import json
    try:
        runs = json.loads((run_dir / "manifest.json").read_text())["runs"]
        return runs[0]["arm"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def cmd_plot(args: argparse.Namespace, plugins: Plugins, parser: argparse.ArgumentParser) -> int:
    from workbench import plot
    try:
        plot.need_matplotlib()
    except ImportError as e:
        print(f"workbench: plot: {e}", file=sys.stderr)
        return EXIT_USAGE
    runs, complete = _run_logs(args.run_dir)
    try:
        for path in plot.plot_run_dir(runs, args.out or args.run_dir / "plots", args.format,
                                      args.seed):
            print(path)
    except OSError as e:
        print(f"workbench: plot: cannot write: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if complete else EXIT_FAILED


def cmd_dmesg(args: argparse.Namespace, plugins: Plugins, parser: argparse.ArgumentParser) -> int:
    from workbench.logs import kernel_log
    runs, complete = _run_logs(args.run_dir)
    chosen = [r for r in runs if (args.scenario in (None, r.scenario) and args.arm in (None, r.arm)
                                  and args.seed in (None, r.seed))]
    if runs and not chosen:
        known = sorted({f"{r.scenario} / {r.arm} / seed {r.seed}" for r in runs})
        parser.error(f"no run matches (runs: {'; '.join(known[:20])}"
                     f"{' ...' if len(known) > 20 else ''})")
    for i, run in enumerate(chosen):
        if len(chosen) > 1:
            print(f"{'' if i == 0 else chr(10)}==> {run.scenario} / {run.arm} / seed {run.seed} <==")
        for line in kernel_log(run):
            print(line)
    return EXIT_OK if complete else EXIT_FAILED


def cmd_plugins(args: argparse.Namespace, plugins: Plugins, parser: argparse.ArgumentParser) -> int:
    from workbench.catalogue import catalogue, print_text
    data = catalogue(plugins)
    if args.format == "json":
        import json
        print(json.dumps(data, indent=2))
    else:
        print_text(data)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
