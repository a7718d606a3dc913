"""``leanserve serve REPO``: serve a model repository over the Open Inference Protocol."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UsageError

# What a container sets for the server (see leanserve.deploy): flags win over these.
MEMORY_BUDGET_ENV = "LEANSERVE_MEMORY_BUDGET"
WORKERS_ENV = "LEANSERVE_WORKERS"
TOKEN_ENV = "LEANSERVE_TOKEN"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a model repository over HTTP and gRPC (KServe V2 / Triton protocol)")
    p.add_argument("repository", type=Path, help="the model repository: <repo>/<model>/<version>/model.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve the protocol over gRPC on this port (inference.GRPCInferenceService; default: off)",
    )
    p.add_argument("--max-body-bytes", type=int, default=None, help="largest request body accepted (default: 64 MiB)")
    p.add_argument("--max-url-bytes", type=int, default=None, help="longest request URL (414 beyond; default: 8 KiB)")
    p.add_argument(
        "--max-header-bytes", type=int, default=None, help="largest request head (431 beyond; default: 64 KiB)"
    )
    p.add_argument(
        "--header-timeout",
        type=int,
        default=None,
        help="seconds a request's head may take to arrive (408 beyond; default: 10)",
    )
    p.add_argument(
        "--body-timeout", type=int, default=None, help="longest pause within a request body, seconds (default: 30)"
    )
    p.add_argument(
        "--idle-timeout", type=int, default=None, help="seconds a kept-alive connection may idle (default: 75)"
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="on SIGTERM/SIGINT, seconds to finish the requests already accepted (default: %(default)s)",
    )
    p.add_argument(
        "--memory-budget",
        default=os.environ.get(MEMORY_BUDGET_ENV) or None,
        help=f"memory for resident models, measured (B, KiB, MiB, GiB; default: ${MEMORY_BUDGET_ENV}, else no budget); "
        "least recently used on_demand models are unloaded to make room",
    )
    p.add_argument(
        "--load",
        choices=["always", "on_demand"],
        default="always",
        help="when models load unless their model.toml says (load = ...): at start-up, or on their first request",
    )
    p.add_argument(
        "--load-timeout", type=float, default=60.0, help="longest a request waits for its model to load (seconds)"
    )
    p.add_argument(
        "--admin-token",
        default=None,
        help="token for model control (POST /v2/repository/models/.../load|unload); "
        "default: $LEANSERVE_ADMIN_TOKEN; without one, control is off",
    )
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"also require this bearer token for inference and model data (default: ${TOKEN_ENV})",
    )
    p.add_argument(
        "--poll-seconds",
        type=float,
        default=None,
        help="look for new versions and changed model.toml files every N seconds and swap them in",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the server keeps its state (the failure log, the experiments' records); "
        "default: <repository>/.leanserve",
    )
    p.add_argument(
        "--failure-log-entries",
        type=int,
        default=None,
        help="failed requests the failure log keeps, oldest dropped first (default: 100000; 0: no failure log)",
    )
    p.add_argument(
        "--experiments",
        type=Path,
        default=None,
        help="the experiments to serve (A/B splits, shadows, canaries); default: <repository>/experiments.toml",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=os.environ.get(WORKERS_ENV) or "1",
        help="worker processes on the one port (SO_REUSEPORT), each its own event loop and engines; "
        f"'auto': one per core (default: ${WORKERS_ENV}, else 1)",
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="serve on Ray Serve: one deployment per model ([scale] in model.toml) behind an ingress "
        "speaking the same protocol (needs leanserve[ray])",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --ray: the Ray cluster to join ('auto': the local one running); default: start one",
    )
    p.add_argument(
        "--idle-poll-us",
        type=float,
        default=None,
        help="after each answer, poll the sockets this many microseconds before the event loop sleeps: a "
        "client's next request then needs no wake-up (0: off; default: 50 with two cores or more and one "
        "worker, else off)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines on stderr: text, or one JSON object per line with request ids (default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..failures import DEFAULT_MAX_ENTRIES
    from ..logs import configure_logging
    from ..memory import parse_size
    from ..protocol import Limits
    from ..registry import RegistryOptions
    from ..server import ExperimentOptions, ObservabilityOptions, serve
    from ..server.auth import ADMIN_TOKEN_ENV, Tokens

    if args.experiments is not None and not args.experiments.is_file():
        raise UsageError(f"--experiments {args.experiments}: no such file")
    if not args.repository.is_dir():
        raise UsageError(f"{args.repository} is not a directory", hint="pass a model repository folder")
    if args.poll_seconds is not None and args.poll_seconds <= 0:
        raise UsageError("--poll-seconds must be positive")
    entries = DEFAULT_MAX_ENTRIES if args.failure_log_entries is None else args.failure_log_entries
    if entries < 0:
        raise UsageError("--failure-log-entries must be 0 (no failure log) or more")
    if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
        raise UsageError(f"--grpc-port must be a port number (0-65535), got {args.grpc_port}")
    if args.address is not None and not args.ray:
        raise UsageError("--address is for --ray")
    not_on_ray = (args.grpc_port, args.poll_seconds, args.idle_poll_us)
    if args.ray and (args.workers != 1 or any(flag is not None for flag in not_on_ray)):
        raise UsageError(
            "--ray takes none of --workers, --grpc-port, --poll-seconds and --idle-poll-us", hint="Ray scales replicas"
        )
    configure_logging(args.log_level, args.log_format)
    given = {
        "max_body_bytes": args.max_body_bytes,
        "max_url_bytes": args.max_url_bytes,
        "max_header_bytes": args.max_header_bytes,
        "header_timeout_s": args.header_timeout,
        "body_timeout_s": args.body_timeout,
        "idle_timeout_s": args.idle_timeout,
    }
    limits = Limits(**{name: value for name, value in given.items() if value is not None})
    if args.shutdown_grace < 0:
        raise UsageError("--shutdown-grace must be 0 or more seconds")
    if args.idle_poll_us is not None and not 0 <= args.idle_poll_us <= 10_000:
        raise UsageError("--idle-poll-us must be 0 (off) to 10000 microseconds")
    options = RegistryOptions(
        memory_budget=parse_size(args.memory_budget) if args.memory_budget is not None else None,
        default_load=args.load,
        load_timeout_seconds=args.load_timeout,
    )
    tokens = Tokens(admin=args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None, inference=args.token)
    if args.ray:
        return _serve_on_ray(args, options, tokens)
    serve(
        args.repository,
        host=args.host,
        port=args.port,
        limits=limits,
        options=options,
        tokens=tokens,
        poll_seconds=args.poll_seconds,
        observability=ObservabilityOptions(state_dir=args.state_dir, failure_log_entries=entries),
        grpc_port=args.grpc_port,
        experiments=ExperimentOptions(file=args.experiments),
        workers=args.workers,
        log_setup=(args.log_level, args.log_format),
        shutdown_grace_seconds=args.shutdown_grace,
        idle_poll_seconds=None if args.idle_poll_us is None else args.idle_poll_us / 1e6,
    )
    return 0


def _serve_on_ray(args: argparse.Namespace, options: object, tokens: object) -> int:
    try:
        from ..ray import RayOptions, serve_on_ray
    except ImportError as e:
        raise UsageError(f"--ray needs Ray Serve ({e})", hint="pip install 'leanserve[ray]'") from None
    serve_on_ray(
        args.repository,
        args.host,
        args.port,
        args.address,
        RayOptions(options, tokens, args.experiments, args.state_dir),  # type: ignore[arg-type]
    )
    return 0


def _workers(raw: str) -> int | str:
    if raw == "auto":
        return raw
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes (1 or more) or auto, got {raw!r}")
    return int(raw)
