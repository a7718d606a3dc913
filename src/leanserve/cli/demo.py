"""``leanserve demo``: build the demo repository (digits CNN, MiniLM embeddings), then serve it."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="build the demo models (a digits CNN and MiniLM sentence embeddings) offline and serve them",
    )
    p.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="where to build the model repository (default: $LEANSERVE_HOME/demo or ~/.cache/leanserve/demo)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--no-serve", action="store_true", help="build the repository, print how to use it, and exit")
    p.add_argument("--force", action="store_true", help="rebuild the models even when already built")
    p.add_argument(
        "--no-optimize", action="store_true", help="skip `leanserve optimize` on the demo models (it takes minutes)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..config import load_model_config
    from ..demo import build_demo_repository, digits_example

    console = Console(highlight=False)
    with console.status("building the demo repository ...") as status:

        def progress(message: str) -> None:
            status.update(message)
            console.print(f"[dim]{message}[/dim]")

        repo = build_demo_repository(args.repo, progress=progress, force=args.force)
        if not args.no_optimize:
            from ..demo.optimized import optimize_demo_repository

            optimize_demo_repository(repo, progress=progress, force=args.force)

    accuracy = load_model_config(repo / "digits").metadata.get("accuracy")
    example = digits_example(repo)
    base = f"http://{_client_host(args.host)}:{args.port}"
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": list(example.image.shape),
                "datatype": "FP32",
                "data": [round(float(v), 4) for v in example.image.ravel()],
            }
        ]
    }
    curl = (
        f"curl -s {base}/v2/models/digits/infer -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body, separators=(',', ':')))}"
    )
    console.print(f"\n[bold]Demo repository[/bold] {repo}")
    console.print(
        "  [bold]digits[/bold]  CNN on 8x8 handwritten digits, image FP32 [-1,1,8,8] -> logits, probabilities"
        + (f" (held-out accuracy {accuracy:.1%})" if isinstance(accuracy, float) else "")
    )
    console.print(
        "  [bold]minilm[/bold]  all-MiniLM-L6-v2 sentence embeddings, input_ids/attention_mask -> embedding [384]"
    )
    console.print(f"\n[bold]Classify a held-out digit[/bold] (its label is {example.label}):")
    console.print(curl, soft_wrap=True)
    console.print(
        "\n[bold]Embed sentences[/bold]: tokenize on the client with "
        "[cyan]leanserve.demo.tokenize([...])[/cyan] and send input_ids and attention_mask to "
        f"{base}/v2/models/minilm/infer"
    )
    if args.no_serve:
        console.print(f"\nServe it with: leanserve serve {shlex.quote(str(repo))}")
        return 0

    from ..server import serve

    console.print(f"\nServing on {base} (Ctrl+C to stop)")
    serve(repo, host=args.host, port=args.port)
    return 0


def _client_host(host: str) -> str:
    """The address a client on this machine should use to reach ``host``."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
