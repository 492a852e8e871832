"""``python -m search.dashboard``: optuna-dashboard on the study storage and its artifacts.

Each trial's page lists its artifacts (per-batch losses, the decision-boundary map) from the
artifact folder that ``search.run`` writes, and each study's page shows its note (the study
file's description, the command, the data fingerprint). The server binds to 127.0.0.1 unless
``--host`` says otherwise; ``--port 0`` picks a free port. The first line printed is the address.

optuna-dashboard has no login, and its API edits notes and deletes studies with their
artifact files. So the dashboard is read-only unless ``--allow-writes`` is given: every
request but GET and HEAD gets HTTP 405 with a one-line JSON ``reason`` (which the page shows).
Bound to an address other than loopback it warns, on stderr, that anyone on the network can
reach it.

Examples::

    python -m search.dashboard
    python -m search.dashboard --storage sqlite:///lr.db --port 8081
    python -m search.dashboard --allow-writes    # notes and deletions on
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from objectives.errors import ConfigError, HPSearchError
from search.records.storage import (
    DEFAULT_STORAGE,
    artifact_dir_for,
    open_storage,
    require_existing_storage,
)

READ_METHODS = frozenset({"GET", "HEAD"})
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def read_only(app: WSGIApp) -> WSGIApp:
    """WSGI middleware: GET and HEAD go to ``app``; any other method gets 405 and a JSON
    ``{"reason": ...}`` (the front end shows it) saying how to allow writes."""

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in READ_METHODS:
            return app(environ, start_response)
        reason = (f"read-only dashboard: {method} refused (it would change the storage); "
                  "restart it with `python -m search.dashboard --allow-writes` to edit notes "
                  "or delete studies")
        body = json.dumps({"reason": reason}).encode()
        start_response("405 Method Not Allowed", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Allow", "GET, HEAD")])
        return [body]

    return guarded


def is_loopback(host: str) -> bool:
    """Whether a bound address is reachable from this machine only (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """The browser loads several API routes at once; serve each in its own thread."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No line per request (the front end polls the API every few seconds)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


def make_app(storage_url: str, artifact_dir: Path | None = None, *,
             allow_writes: bool = False) -> WSGIApp:
    """The dashboard's WSGI app for ``storage_url`` with its artifact folder; read-only
    (``read_only``) unless ``allow_writes``."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    require_existing_storage(storage_url)
    folder = artifact_dir or artifact_dir_for(storage_url)
    folder.mkdir(parents=True, exist_ok=True)
    app = wsgi(open_storage(storage_url), artifact_store=FileSystemArtifactStore(str(folder)))
    return app if allow_writes else read_only(app)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search.dashboard",
        description="Serve optuna-dashboard on a study storage, with the trials' artifacts.")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL or journal file (default {DEFAULT_STORAGE})")
    parser.add_argument("--artifact-dir", type=Path,
                        help="artifact folder (default: beside the storage file)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to "
                        "the network)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--allow-writes", action="store_true",
                        help="let the page edit notes and delete studies and artifacts "
                        "(default: read-only, every request but GET/HEAD is refused)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
        app = make_app(args.storage, args.artifact_dir, allow_writes=args.allow_writes)
        try:
            server = make_server(args.host, args.port, app, server_class=_ThreadingServer,
                                 handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); "
                              "pick another --port, or --port 0 for a free one") from None
    except HPSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"optuna-dashboard on http://{shown}:{port}/dashboard/", flush=True)
    mode = ("writes allowed (notes, deletions)" if args.allow_writes
            else "read-only (--allow-writes allows notes and deletions)")
    print(f"storage {args.storage}, artifacts in "
          f"{args.artifact_dir or artifact_dir_for(args.storage)}; {mode}; Ctrl-C stops it",
          flush=True)
    if not is_loopback(host):
        who = "anyone there can read" + (" and delete" if args.allow_writes else "")
        print(f"warning: listening on {shown}: the dashboard is reachable from the network with "
              f"no login ({who} every study); --host 127.0.0.1 keeps it local",
              file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
