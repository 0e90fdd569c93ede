"""``bulwark loadtest``'s command line: every bad input exits 64 naming its flag, before
any connection; an unreachable server exits 1; no traceback either way."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bulwark_server.cli import main

CALL = ["127.0.0.1:1", "--call", "bulwark.v1.RateLimitService/Check"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        status = main(["loadtest", *argv])
    except SystemExit as exc:  # argparse's own errors exit through parser.exit
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out + captured.err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (CALL, "-n/--total"),  # no bound
        ([*CALL, "-n", "0"], "-n/--total"),
        ([*CALL, "-z", "0s"], "-z/--duration"),
        ([*CALL, "-z", "soon"], "-z/--duration"),
        ([*CALL, "-n", "5", "-c", "x"], "-c/--concurrency"),
        ([*CALL, "-n", "5", "-c", "0"], "-c/--concurrency"),
        ([*CALL, "-n", "5", "--fail-if", "p99>5"], "--fail-if"),
        ([*CALL, "-n", "5", "--fail-if", "latency>5ms"], "--fail-if"),
        ([*CALL, "-n", "5", "--nope"], "unrecognized arguments: --nope"),
        (["127.0.0.1:1", "-n", "5"], "--call"),
        (["127.0.0.1:1", "--call", "NoMethod", "-n", "5"], "--call"),
        (["nohost", "--call", "a.B/C", "-n", "5"], "HOST:PORT"),
        ([*CALL, "-n", "5", "--rps", "0"], "--rps"),
        ([*CALL, "-n", "5", "--load-schedule", "step", "--rps", "5"], "--rps"),
        ([*CALL, "-n", "5", "--load-start", "5"], "--load-schedule"),
        ([*CALL, "-n", "5", "--load-schedule", "line", "--load-start", "5"], "--load-step"),
        ([*CALL, "-n", "5", "--load-schedule", "wave"], "--load-schedule"),
        ([*CALL, "-n", "5", "--insecure", "--cacert", "ca.pem"], "--insecure"),
        ([*CALL, "-n", "5", "--cert", "c.pem"], "--cert and --key"),
        ([*CALL, "-n", "5", "--cacert", "/nonexistent/ca.pem"], "--cacert"),
        ([*CALL, "-n", "5", "-m", "novalue"], "-m/--metadata"),
        ([*CALL, "-n", "5", "-m", '{"k": 1}'], "-m/--metadata"),
        ([*CALL, "-n", "5", "-m", "x-bin=abc"], "-m/--metadata"),
        ([*CALL, "-n", "5", "--report-as", "checkout"], "--bulwark"),
        ([*CALL, "-n", "5", "--report-as", "bad name", "--bulwark", "127.0.0.1:2"], "--report-as"),
        ([*CALL, "-n", "5", "-d", "{}", "-D", "x.json"], "-D/--data-file"),
        ([*CALL, "-n", "5", "-D", "/nonexistent/data.json"], "-D/--data-file"),
        ([*CALL, "-n", "5", "-c", "2", "--workers", "3"], "--workers"),
        ([*CALL, "-n", "5", "-O", "xml"], "-O/--format"),
    ],
)
def test_usage_errors_exit_64_and_name_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    status, output = run(capsys, *argv)
    assert status == 64, output
    assert names in output


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    status, output = run(capsys, "--help")
    assert status == 0
    for text in ("exit status", "64", "--fail-if", "coordinated omission", "{{.RequestNumber}}"):
        assert text in output


def test_an_unreachable_server_exits_1_quickly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, output = run(
        capsys,
        f"127.0.0.1:{port}",
        "--call",
        "a.B/C",
        "-n",
        "1",
        "--connect-timeout",
        "300ms",
        "-o",
        str(tmp_path / "report.json"),
    )
    assert status == 1
    assert f"cannot connect to 127.0.0.1:{port} within 0.3s" in output
    assert not (tmp_path / "report.json").exists()


def test_a_bulwark_token_goes_to_bulwark_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from bulwark_server.cli.loadtest.flags import add_arguments
    from bulwark_server.cli.loadtest.options import from_args

    monkeypatch.setenv("BULWARK_TOKEN", "replica-secret")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = [*CALL, "-n", "1", "--report-as", "checkout", "--bulwark", "127.0.0.1:2"]
    options = from_args(parser.parse_args(argv))
    # The target may be any service: it never sees Bulwark's credential.
    assert not any(key == "authorization" for key, _ in options.metadata)
    assert options.bulwark_token == "replica-secret"
    targeted = from_args(parser.parse_args([*argv, "--token", "t"]))
    assert ("authorization", "Bearer t") in targeted.metadata
