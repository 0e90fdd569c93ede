"""``bulwark chaos``: run experiments and stop them; the kill switch."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bulwark_server.cli.channel import ServerTarget, add_client_arguments, server_target

ME = "bulwark chaos"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chaos`` and its commands."""
    chaos = commands.add_parser(
        "chaos",
        help="run chaos experiments; the kill switch",
        description=(
            "Run fault-injection experiments on the server (ChaosService) and follow "
            "them; stop one; turn the fleet-wide kill switch on or off."
        ),
    )
    chaos.set_defaults(chaos_help=chaos.print_help, handler=run)
    sub = chaos.add_subparsers(dest="chaos_command", metavar="COMMAND")
    run_ = sub.add_parser(
        "run",
        help="start an experiment from a file and follow it to its verdict",
        description=(
            "Start the experiment of FILE (an ExperimentSpec in JSON or YAML, the proto's "
            "JSON field names), print its timeline as it happens, renew its dead-man's "
            "switch while this command runs (if the spec sets renew_within), and print the "
            "report. Ctrl-C stops the experiment (its rules are deleted, its rollbacks "
            "run). Exit status: 0 PASSED, 1 FAILED (aborted or an expectation unmet), "
            "2 a bad file or a refused start (the reason is printed)."
        ),
    )
    run_.add_argument("file", metavar="FILE", help="the experiment (.json, .yaml or .yml)")
    run_.add_argument("--detach", action="store_true", help="print the id once started and exit 0")
    run_.add_argument("--json", action="store_true", help="print the final report as JSON")
    stop = sub.add_parser("stop", help="abort a running experiment")
    stop.add_argument("id", help="the experiment's id")
    stop.add_argument("--reason", default="", help="recorded in its report")
    show = sub.add_parser("show", help="print an experiment's report")
    show.add_argument("id", help="the experiment's id")
    show.add_argument("--json", action="store_true", help="as JSON")
    halt = sub.add_parser(
        "halt", help="the kill switch: abort every experiment, delete every fault rule"
    )
    halt.add_argument("--reason", required=True, help="why (recorded and shown)")
    sub.add_parser("resume", help="turn the kill switch off")
    sub.add_parser("status", help="the kill switch, running experiments, rule count")
    for command in (run_, stop, show, halt, *[sub.choices[n] for n in ("resume", "status")]):
        add_client_arguments(command)
        command.add_argument(
            "--timeout", type=float, default=10.0, help="seconds per call (default 10)"
        )


def run(args: argparse.Namespace) -> int:
    """Run the ``chaos`` command named; its help and 2 when none is."""
    if args.chaos_command is None:
        args.chaos_help()
        return 2
    try:
        target = server_target(args)
    except (ValueError, OSError) as exc:
        print(f"{ME}: {exc}", file=sys.stderr)
        return 2
    try:
        with target.channel() as channel:
            return COMMANDS[args.chaos_command](args, target, channel)
    except grpc.RpcError as exc:
        code = exc.code().name  # type: ignore[attr-defined]
        print(f"{ME}: {args.server}: {code}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 2


def _stub(channel: grpc.Channel) -> Any:
    from bulwark.v1 import chaos_pb2_grpc

    return chaos_pb2_grpc.ChaosServiceStub(channel)


def load_spec(path: str) -> Any:
    """The ExperimentSpec in ``path``; ValueError naming the problem (and the field)."""
    from google.protobuf import json_format

    from bulwark.v1 import chaos_pb2

    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an ExperimentSpec object")
    try:
        return json_format.ParseDict(data, chaos_pb2.ExperimentSpec())
    except json_format.ParseError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _run(args: argparse.Namespace, target: ServerTarget, channel: grpc.Channel) -> int:
    from bulwark.v1 import chaos_pb2 as C

    try:
        spec = load_spec(args.file)
    except (ValueError, OSError) as exc:
        print(f"{ME}: {exc}", file=sys.stderr)
        return 2
    stub, meta = _stub(channel), target.metadata
    experiment = stub.StartExperiment(
        C.StartExperimentRequest(spec=spec), timeout=args.timeout, metadata=meta
    ).experiment
    print(f"started {experiment.id}: {spec.title or 'untitled'}", flush=True)
    if args.detach:
        return 0
    done = threading.Event()
    if spec.HasField("renew_within"):
        every = spec.renew_within.ToNanoseconds() / 1e9 / 3

        def renew() -> None:
            while not done.wait(every):
                try:
                    stub.RenewExperiment(
                        C.RenewExperimentRequest(id=experiment.id), timeout=every, metadata=meta
                    )
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
                        return  # it has ended

        threading.Thread(target=renew, name="renew", daemon=True).start()
    started = experiment.started_at.ToNanoseconds() / 1e9
    shown = 0
    try:
        try:
            for response in stub.WatchExperiment(
                C.WatchExperimentRequest(id=experiment.id), metadata=meta
            ):
                experiment = response.experiment
                for entry in experiment.timeline[shown:]:
                    print(f"  +{entry.at.ToNanoseconds() / 1e9 - started:7.2f}s  {entry.event}")
                shown = len(experiment.timeline)
        except KeyboardInterrupt:
            print("interrupted: stopping the experiment", file=sys.stderr, flush=True)
            experiment = stub.StopExperiment(
                C.StopExperimentRequest(id=experiment.id, reason="interrupted"),
                timeout=args.timeout,
                metadata=meta,
            ).experiment
    finally:
        done.set()
    _print_report(experiment, args.json)
    return 0 if experiment.verdict == C.VERDICT_PASSED else 1


def _print_report(experiment: Any, as_json: bool) -> None:
    from google.protobuf import json_format

    from bulwark.v1 import chaos_pb2 as C

    if as_json:
        print(json.dumps(json_format.MessageToDict(experiment), indent=2))
        return
    state = C.ExperimentState.Name(experiment.state).removeprefix("EXPERIMENT_STATE_")
    verdict = C.Verdict.Name(experiment.verdict).removeprefix("VERDICT_")
    print(
        f"{experiment.id}: {state}, verdict {verdict}"
        + (f" ({experiment.reason})" if experiment.reason else "")
    )
    for result in experiment.expectations:
        when = f"after {result.after_seconds:.2f}s" if result.met else "not met in time"
        print(f"  {'✓' if result.met else '✗'} {result.probe}: {when}")
    for i, text in enumerate(experiment.load_reports):
        try:
            load = json.loads(text)
            errors = sum(
                n for code, n in load.get("statusCodeDistribution", {}).items() if code != "OK"
            )
            print(
                f"  load {i}: {load.get('count', 0)} calls, {load.get('rps', 0):.1f}/s, "
                f"{errors} not OK"
            )
        except (ValueError, AttributeError, TypeError):
            print(f"  load {i}: {text[:200]}")


def _stop(args: argparse.Namespace, target: ServerTarget, channel: grpc.Channel) -> int:
    from bulwark.v1 import chaos_pb2 as C

    experiment = (
        _stub(channel)
        .StopExperiment(
            C.StopExperimentRequest(id=args.id, reason=args.reason),
            timeout=args.timeout,
            metadata=target.metadata,
        )
        .experiment
    )
    _print_report(experiment, False)
    return 0


def _show(args: argparse.Namespace, target: ServerTarget, channel: grpc.Channel) -> int:
    from bulwark.v1 import chaos_pb2 as C

    experiment = (
        _stub(channel)
        .GetExperiment(
            C.GetExperimentRequest(id=args.id), timeout=args.timeout, metadata=target.metadata
        )
        .experiment
    )
    if not args.json:
        for entry in experiment.timeline:
            at = time.strftime("%H:%M:%S", time.gmtime(entry.at.seconds))
            print(f"  {at}.{entry.at.nanos // 10_000_000:02d}  {entry.event}")
    _print_report(experiment, args.json)
    return 0


def _halt(args: argparse.Namespace, target: ServerTarget, channel: grpc.Channel) -> int:
    from bulwark.v1 import chaos_pb2 as C

    halted = args.chaos_command == "halt"
    request = C.SetChaosHaltedRequest(halted=halted, reason=getattr(args, "reason", ""))
    _stub(channel).SetChaosHalted(request, timeout=args.timeout, metadata=target.metadata)
    print("chaos halted: experiments aborted, fault rules deleted" if halted else "chaos resumed")
    return 0


def _status(args: argparse.Namespace, target: ServerTarget, channel: grpc.Channel) -> int:
    from bulwark.v1 import chaos_pb2 as C

    status = _stub(channel).GetChaosStatus(
        C.GetChaosStatusRequest(), timeout=args.timeout, metadata=target.metadata
    )
    print(f"kill switch: {'ON (' + status.reason + ')' if status.halted else 'off'}")
    print(f"running experiments: {', '.join(status.running) or 'none'}")
    print(f"fault rules: {status.fault_rules}")
    return 0


COMMANDS = {
    "run": _run,
    "stop": _stop,
    "show": _show,
    "halt": _halt,
    "resume": _halt,
    "status": _status,
}
