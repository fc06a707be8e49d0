"""The ``packrun`` command: a thin layer over the library.

Exit codes: 0 when all is well, 1 when a check found something wrong, 2 on an error (bad input, a
refused operation). Every command takes ``--json`` for output a program can read.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, TextIO

from packrun._bundle import build_bundle
from packrun._manifest import decode_pack_manifest, read_document
from packrun._source import CheckReport, check, discover, verify
from packrun.errors import NotFound, PackrunError

__all__ = ["main"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2


class _Output:
    def __init__(self, as_json: bool, stream: TextIO) -> None:
        self.as_json = as_json
        self.stream = stream

    def line(self, text: str = "") -> None:
        if not self.as_json:
            print(text, file=self.stream)

    def data(self, payload: Any) -> None:
        if self.as_json:
            print(json.dumps(payload, indent=2, sort_keys=False), file=self.stream)


def _cmd_build(args: argparse.Namespace, out: _Output) -> int:
    src = Path(args.src)
    targets: list[tuple[Path, Path | None]] = []  # (integration source, dist override)
    for source in discover(src) if src.is_dir() else []:
        if source.kind == "integration":
            targets.append((source.path, None))
            continue
        pack = decode_pack_manifest(
            read_document(source.path / "pack.json"), source=str(source.path / "pack.json")
        )
        ref = pack.integration()
        if ref is not None:
            targets.append((source.path / ref.path, source.path / "dist"))
    if not targets:
        raise NotFound(
            "integration source (manifest.json with code/, or a pack.json with an integration entry) under",
            str(src),
        )
    built = []
    for path, dist in targets:
        out_dir = Path(args.output) if args.output else dist
        result = build_bundle(path, out_dir, contract=args.contract)
        built.append(
            {
                "path": str(result.path),
                "digest": result.digest,
                "id": result.manifest.id,
                "version": str(result.manifest.version),
                "contract": result.manifest.contract,
            }
        )
        out.line(f"built {result.path}  {result.digest}  (contract {result.manifest.contract})")
    out.data({"built": built})
    return EXIT_OK


def _print_report(report: CheckReport, out: _Output, verb: str) -> int:
    out.data(report.to_dict())
    for finding in report.findings:
        out.line(f"FAIL [{finding.code}] {finding.subject}")
        out.line(f"     {finding.message}")
        for layer in finding.layers:
            out.line(f"       - {layer}")
    for note in report.notes:
        out.line(f"note {note}")
    status = "ok" if report.ok else f"{len(report.findings)} finding(s)"
    out.line(f"{verb} {report.root}: {len(report.checked)} item(s) checked, {status}")
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def _cmd_check(args: argparse.Namespace, out: _Output) -> int:
    return _print_report(check(args.src), out, "check")


def _cmd_verify(args: argparse.Namespace, out: _Output) -> int:
    return _print_report(verify(args.path), out, "verify")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="packrun",
        description="Build, check and run versioned integration bundles.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 an error.",
    )
    parser.add_argument("--version", action="version", version=f"packrun {dist_version('packrun')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, run: Callable[[argparse.Namespace, _Output], int]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print JSON for programs")
        p.set_defaults(run=run)
        return p

    p = command(
        "build",
        "Build {id}-{version}.bundle.tar.gz from an integration or pack source (or a tree of them).",
        _cmd_build,
    )
    p.add_argument(
        "src", help="integration source (manifest.json + code/), pack source (pack.json) or a tree"
    )
    p.add_argument("-o", "--output", help="folder to write to (default: the source's dist/)")
    p.add_argument(
        "--contract",
        type=int,
        default=None,
        metavar="N",
        help="stamp contract generation N (a fixture for an older SDK); default: the source "
        "manifest's own, else the current generation",
    )

    p = command(
        "check",
        "Check a pack source or tree: version layers, index, pack pace and dist/.",
        _cmd_check,
    )
    p.add_argument("src")

    p = command(
        "verify",
        "Rebuild the integrations under PATH and compare with dist/; or check one bundle file.",
        _cmd_verify,
    )
    p.add_argument("path")

    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    out_stream = stdout or sys.stdout
    err_stream = stderr or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    out = _Output(args.json, out_stream)
    try:
        code: int = args.run(args, out)
    except PackrunError as exc:
        if args.json:
            print(
                json.dumps({"error": {"code": exc.code, "message": exc.detail}}, indent=2),
                file=out_stream,
            )
        else:
            print(f"packrun: error: {exc}", file=err_stream)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
        if args.json:
            print(
                json.dumps({"error": {"code": "io_error", "message": message}}, indent=2),
                file=out_stream,
            )
        else:
            print(f"packrun: error: {message}", file=err_stream)
        return EXIT_ERROR
    except Exception:  # a bug, not bad input: say so, and never exit 1 ("a check failed")
        print("packrun: internal error; please report it with this traceback:", file=err_stream)
        traceback.print_exc(file=err_stream)
        return EXIT_ERROR
    return code


def entrypoint() -> None:
    """The console script."""
    raise SystemExit(main())
