"""The ``losskernel`` command: one thin function per subcommand, no logic of its own.

Every subcommand parses its arguments, calls the Python API (``api.py``) and
prints. User errors (``errors.LosskernelError``: bad config, task, run directory,
store, lock) print one line on stderr and exit with status 2 (``--debug`` or
LOSSKERNEL_DEBUG=1 shows their traceback); so does an OSError of the file system
that the user fixes there (no space, quota, read-only, permissions: ``errors.
FILESYSTEM_ERRNOS``), naming the path. A reader that closes the pipe early
(``losskernel info RUN | head -1``) ends the command quietly with status 141, as
a SIGPIPE would. Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import LosskernelError, StoreError, filesystem_error_line

EXIT_USAGE = 2
EXIT_INTERRUPTED = 75  # a stop signal ended sampling after a clean checkpoint: run it again
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (| head)
DEBUG_ENV = "LOSSKERNEL_DEBUG"


def _interrupted() -> type[BaseException]:
    from .jobs.signals import SamplingInterrupted

    return SamplingInterrupted


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key (dotted path, YAML value); repeatable",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace):
    from .api import load_config

    config = load_config(args.config, args.overrides)
    args.output = config.run_dir  # named by a file-system error that names no file
    return config


def _print_sample_report(report) -> None:
    if report is None:
        return
    print(
        f"sampled chains {report.chains}: {report.draws_written} draws written "
        f"in {report.seconds:.1f} s"
    )
    for chain, message in sorted(report.failed.items()):
        print(f"chain {chain} FAILED: {message}", file=sys.stderr)


def _print_reduce_report(report, config) -> None:
    if report is None:
        return
    kind = config.reduce.kernel
    if kind == "neighbours":
        what = (f"the top-{report.k} {report.metric} neighbours of {report.n} samples"
                + (f" ({report.blocks_resumed} of {report.blocks} row blocks resumed)"
                   if report.blocks_resumed else ""))
    else:
        what = f"the {report.n} x {report.n} kernel" + (
            f" and top-{config.reduce.neighbours_k} neighbours" if kind == "both" else "")
        if getattr(report, "tiles_resumed", 0):
            what += f" ({report.tiles_resumed} of {report.tiles} tiles resumed)"
    where = getattr(report, "scheduler", None) or {}
    if where.get("scheduler", "threads") != "threads":
        what += f" on dask cluster {where['scheduler']} ({where['workers']} workers at the end)"
    print(
        f"reduced {report.draws_used} draws of chains {report.chains_used} to {what} "
        f"in {report.seconds:.1f} s"
        + (" (partial: see store attrs 'reduce')" if report.partial else "")
    )


def _print_analysis(run) -> None:
    for key, value in run.metrics.get("summary", {}).items():
        print(f"{key}: {value}")
    print(f"analysis written to {run.rundir.analysis}")


def cmd_sample(args: argparse.Namespace) -> int:
    from . import api

    run = api.sample(_load(args), progress=not args.no_progress)
    _print_sample_report(run.sample_report)
    return 0 if not run.sample_report.failed else 3


def cmd_reduce(args: argparse.Namespace) -> int:
    from . import api

    run = api.reduce(args.run_dir, allow_partial=args.allow_partial,
                     progress=not args.no_progress)
    _print_reduce_report(run.reduce_report, run.config)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from . import api

    _print_analysis(api.analyze(args.run_dir, allow_stale=args.allow_stale))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import api

    config = _load(args)
    if config.development.checkpoints:  # one run per checkpoint, maps side by side
        return _run_development(config, progress=not args.no_progress)
    run = api.run(config, progress=not args.no_progress)
    _print_sample_report(run.sample_report)
    if run.reduce_report is None:  # another rank of torchrun: the main one goes on
        return 0
    _print_reduce_report(run.reduce_report, config)
    if config.analysis.enabled:
        _print_analysis(run)
    return 0


def _run_development(config, progress: bool) -> int:
    from .jobs.development import FIGURE_FILE, SUMMARY_FILE, run_development

    result = run_development(config, progress=progress)
    for entry in result.get("checkpoints", []):
        summary = ", ".join(f"{k} {v}" for k, v in entry["summary"].items())
        print(f"{entry['name']}: {summary}")
    if result:
        figure = f"{config.run_dir / FIGURE_FILE} and " if "figure" in result else ""
        print(f"development written to {figure}{config.run_dir / SUMMARY_FILE}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .analysis.compare import compare_runs

    result = compare_runs(Path(args.run_a), Path(args.run_b))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import api

    info = api.open_run(args.run_dir).info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        from .jobs.info import format_info

        print(format_info(info))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from . import api

    report = api.open_run(args.run_dir).verify(repair=args.repair)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    if report.intact:
        print(report.summary())
        return 0
    if report.repaired:
        print(report.summary())
        print(f"repaired: the damaged draws are marked not done; run 'losskernel sample' on "
              f"the run's config (output {report.run_dir}) to recompute them bitwise")
        return 0
    raise StoreError(f"{report.summary()}: run 'losskernel verify {report.run_dir} --repair', "
                     "then 'losskernel sample' to recompute them")


def cmd_submit(args: argparse.Namespace) -> int:
    from .jobs.submit import submit, wait

    config = _load(args)
    sub = submit(config)
    what = (f"{len(sub.tasks)} array tasks ({sub.cluster}, job {sub.array_id}) for chains "
            f"{sub.groups}" if sub.tasks else "no array tasks (every chain is done or failed)")
    print(f"submitted {what}" + (f"; reduce job {sub.reduce.job_id}" if sub.reduce else ""))
    print(f"logs and submission record in {sub.folder}")
    if sub.cluster == "slurm" and not args.wait:
        return 0
    wait(sub, poll_s=args.poll, reduce_here=sub.reduce is None and config.slurm.reduce,
         allow_partial=config.slurm.allow_partial)
    for line in sub.failures:
        print(line)
    if sub.failures:
        print(f"losskernel: error: {len(sub.failures)} job(s) failed: {sub.failures[0]}",
              file=sys.stderr)
        return 4
    print(f"run {sub.run_dir} sampled" + (" and reduced" if config.slurm.reduce else ""))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .jobs.calibration.calibrate import calibrate, parse_shard, write_recommended_config
    from .jobs.calibration.grid import calibration_dir
    from .rundir import REPORT_NAME

    overrides = list(args.overrides)
    for key in ("lr", "localization", "nbeta"):
        if getattr(args, key) is not None:
            overrides.append(f"calibrate.{key}=[{getattr(args, key)}]")
    for key in ("chains_per_setting", "steps", "draws", "min_cka"):
        if getattr(args, key) is not None:
            overrides.append(f"calibrate.{key}={getattr(args, key)}")
    from .api import load_config

    config = load_config(args.config, overrides)
    args.output = config.run_dir
    shard = parse_shard(args.shard) if args.shard else None
    cal = calibrate(config, shard=shard, progress=not args.no_progress)
    if cal is None:
        print(f"pilot chains sampled into {calibration_dir(config)}; run 'losskernel calibrate' "
              "without --shard (or wait for rank 0) for the report")
        return 0
    print(f"rule: {cal.rule}")
    print(f"report: {cal.directory / REPORT_NAME}")
    if cal.recommended is None:
        print("losskernel: no setting passed the calibration (see the report)", file=sys.stderr)
        return 3
    r = cal.recommended
    print(f"recommended: sampler.lr={r.lr:g} sampler.localization={r.localization:g} "
          f"sampler.nbeta={r.nbeta:g}")
    if args.write:
        out = write_recommended_config(Path(args.config), args.overrides, cal, Path(args.write))
        print(f"written to {out}")
    return 0


def cmd_train_modular(args: argparse.Namespace) -> int:
    from .tasks.modular_train import main as train_main

    return int(train_main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="losskernel", description="Loss kernels of trained networks, sampled with SGLD."
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of user errors too (or {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="sample, reduce and analyze: the whole job")
    _add_config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sample", help="start or resume sampling")
    _add_config_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reduce", help="mean, variance, covariance and correlation")
    p.add_argument("run_dir")
    p.add_argument("--allow-partial", action="store_true",
                   help="use only the done draws of healthy chains")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reduce)

    p = sub.add_parser("analyze", help="metrics.json, figures and the HTML report")
    p.add_argument("run_dir")
    p.add_argument("--allow-stale", action="store_true",
                   help="analyze a kernel reduced before the usable draws changed")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("compare", help="CKA and other numbers between two runs' kernels")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("info", help="config, progress and chain health of a run")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("verify", help="check every chunk and checkpoint of a run; --repair "
                       "marks damaged draws for recomputation")
    p.add_argument("run_dir")
    p.add_argument("--repair", action="store_true",
                   help="mark the draws of damaged chunks not done and drop damaged files")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("submit", help="SLURM job array (submitit), then a reduce job")
    _add_config_args(p)
    p.add_argument("--wait", action="store_true",
                   help="wait for the jobs and report failures (always so for slurm.cluster=local)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between job state checks")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("calibrate", help="pilot chains over a grid of lr, localization "
                       "(nbeta): diagnostics, report and a recommended setting")
    _add_config_args(p)
    p.add_argument("--lr", help="comma-separated step sizes (calibrate.lr)")
    p.add_argument("--localization", help="comma-separated localizations (calibrate.localization)")
    p.add_argument("--nbeta", help="comma-separated nbeta values (calibrate.nbeta)")
    p.add_argument("--chains-per-setting", type=int, help="calibrate.chains_per_setting")
    p.add_argument("--steps", type=int, help="SGLD steps per pilot chain (calibrate.steps)")
    p.add_argument("--draws", type=int, help="kept draws per pilot chain (calibrate.draws)")
    p.add_argument("--min-cka", type=float, help="calibrate.min_cka")
    p.add_argument("--shard", metavar="I/K",
                   help="run only share I of K of the pilot chains, no report (array tasks)")
    p.add_argument("--write", metavar="PATH",
                   help="write CONFIG with the recommended setting to PATH (may be CONFIG)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("train-modular", help="train the modular-arithmetic transformer",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train_modular)
    return parser


def _where(args: argparse.Namespace) -> Path | None:
    """The directory the command writes or reads: its config's output or its RUN_DIR."""
    where = getattr(args, "output", None) or getattr(args, "run_dir", None)
    return Path(where) if where else None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot raise again
    (Python's documentation, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.func(args)
    except LosskernelError as exc:
        if debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        cause = filesystem_error_line(exc.__cause__, _where(args)) if exc.__cause__ else None
        if cause is not None:  # e.g. the writer's failed commit: the file system comes first
            message = f"{cause} ({message})"
        print(f"losskernel: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        line = filesystem_error_line(exc, _where(args))
        if line is None or debug:
            raise
        print(f"losskernel: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except _interrupted() as exc:
        print(f"losskernel: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("losskernel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
