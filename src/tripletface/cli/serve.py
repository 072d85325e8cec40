"""Service subcommands: serve (the HTTP API and web page), api-key (add a key to a keys file)."""

import os
import signal
import socket
import sys
from pathlib import Path

from tripletface.cli.arguments import at_least
from tripletface.cli.recognize import _options, _recognizer
from tripletface.errors import InputError


def register(subparsers) -> None:
    """Add the serve and api-key subcommands."""
    # The recognition options (--gallery, --encoder, --threshold, --detector, --workers, --tta),
    # so that the server reads a gallery exactly as the other commands do.
    p = subparsers.add_parser(
        "serve",
        parents=[_options()],
        help="serve the REST API and the web page over HTTP",
        description="Serve the REST API (docs at /docs) and the web page at / over HTTP.",
    )
    p.set_defaults(run=serve)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--port", type=at_least(0, 65535), default=8000, help="TCP port (8000; 0: any free)"
    )
    p.add_argument("--api-keys", type=Path, metavar="FILE", help="require keys from this file")
    p.add_argument(
        "--max-upload", type=at_least(1), default=20, metavar="MB", help="largest upload (20 MB)"
    )
    p.add_argument(
        "--cors", action="append", default=[], metavar="ORIGIN", help="allow this web origin"
    )
    p.add_argument("--access-log", action="store_true", help="log every request on stderr")
    p.add_argument(
        "--threads",
        type=at_least(1),
        help="torch threads of the encoder (default: the cores the detection workers leave, >= 1)",
    )
    p = subparsers.add_parser(
        "api-key",
        help="add a new API key to a keys file and print it",
        description="Create a random API key, store its hash in FILE, print the key once.",
    )
    p.set_defaults(run=api_key)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--scope", choices=("read", "write"), required=True)
    p.add_argument("--label", default="", help="a word saying whose key it is")


def serve(args) -> int:
    from tripletface.service.keys import load_keys
    from tripletface.workers import worker_pool

    keys = load_keys(args.api_keys) if args.api_keys else None
    sock = _listen(args.host, args.port)
    # The detection workers fork now, from the main thread and before torch loads.
    pool = worker_pool(max(1, args.workers))
    pool.submit(int).result()
    try:
        app, engine = _app(args, keys, pool)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        sock.close()
        raise
    import uvicorn

    url = f"http://{_url_host(*sock.getsockname()[:2])}/"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                print(f"tripletface: serving {url} (API docs at {url}docs)", flush=True)

    config = uvicorn.Config(app, log_level="info", access_log=args.access_log, lifespan="on")
    # uvicorn finishes the requests in flight on SIGINT/SIGTERM, then raises the signal again
    # under the handlers it found: these ones, so that the process exits 0 rather than dying.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server = Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()
    return 0 if server.started else 2


def _app(args, keys, pool):
    """The app and its engine: the recognizer loaded, the gallery opened and checked."""
    from tripletface.models.runtime import TorchRuntime
    from tripletface.service.app import Settings, create_app
    from tripletface.service.engine import Engine

    recognizer = _recognizer(args)
    if isinstance(recognizer.runtime, TorchRuntime):
        import torch

        # Threads spinning for cores that the detection workers hold slow the encoder down
        # (onnxruntime's sessions are made not to spin).
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - args.workers))
    engine = Engine(recognizer, pool)
    try:
        engine.open()
    except BaseException:
        engine.close()
        raise
    settings = Settings(keys=keys, max_upload=args.max_upload * 1_000_000, cors=args.cors)
    return create_app(engine, settings), engine


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), so that --port 0 can report the port it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or --host"
        ) from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def api_key(args) -> int:
    from tripletface.service.keys import add_key

    key = add_key(args.file, args.scope, args.label)
    print(key)
    print(
        f"a {args.scope} key, its hash added to {args.file}: keep the key, it is not stored",
        file=sys.stderr,
    )
    return 0
