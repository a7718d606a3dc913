"""``leanserve demo``: build the demo repository (digits CNN, MiniLM embeddings, shapes segmenter), then serve it."""

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
    from ..demo import build_demo_repository

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
    base = f"http://{_client_host(args.host)}:{args.port}"
    console.print(f"\n[bold]Demo repository[/bold] {repo}")
    console.print(
        "  [bold]digits[/bold]      CNN on 8x8 handwritten digits: png (BYTES) or image FP32 [-1,1,8,8] -> "
        "logits, probabilities" + (f" (held-out accuracy {accuracy:.1%})" if isinstance(accuracy, float) else "")
    )
    console.print(
        "  [bold]minilm[/bold]      all-MiniLM-L6-v2: text (BYTES, tokenized on the server) or "
        "input_ids/attention_mask -> embedding [384]"
    )
    console.print("  [bold]shapes-seg[/bold]  attention U-Net: png (BYTES) -> mask UINT8 [H,W], mask_png (BYTES)")
    for title, command in usage_examples(repo, base):
        console.print(f"\n[bold]{title}[/bold]")
        console.print(command, soft_wrap=True)
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


def usage_examples(repo: Path, base: str) -> list[tuple[str, str]]:
    """(title, command) for each demo model: curl with JSON, and tritonclient in Python."""
    import base64

    from ..demo import digits_png
    from ..demo.shapes import EXAMPLE

    png, label = digits_png(repo)
    digits_body = {
        "inputs": [{"name": "png", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}]
    }
    text_body = {
        "inputs": [
            {
                "name": "text",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["leanserve keeps models light.", "모델을 가볍게 서빙합니다."],
            }
        ]
    }
    example = shlex.quote(str(repo / "shapes-seg" / EXAMPLE))
    shapes_curl = (
        f"IMG=$(base64 -w0 {example}); curl -s {base}/v2/models/shapes-seg/infer "
        "-H 'Content-Type: application/json' "
        """-d '{"inputs":[{"name":"png","shape":[1],"datatype":"BYTES","data":["'"$IMG"'"]}],"""
        """"outputs":[{"name":"mask"}]}'"""
    )
    host = base.removeprefix("http://")
    python = f"""python - <<'EOF'
import numpy as np
import tritonclient.http as httpclient

client = httpclient.InferenceServerClient("{host}")
text = httpclient.InferInput("text", [2], "BYTES")
sentences = ["leanserve keeps models light.", "모델을 가볍게 서빙합니다."]
text.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object))
print(client.infer("minilm", [text]).as_numpy("embedding").shape)       # (2, 384)
png = httpclient.InferInput("png", [1], "BYTES")
png.set_data_from_numpy(np.array([open({example}, "rb").read()], dtype=object))
result = client.infer("shapes-seg", [png])                               # binary tensors both ways
print(result.as_numpy("mask").shape, len(result.as_numpy("mask_png")[0]), "bytes of PNG")
EOF"""
    return [
        (f"Classify a held-out digit sent as a PNG (its label is {label})", _curl(base, "digits", digits_body)),
        ("Embed sentences, tokenized on the server", _curl(base, "minilm", text_body)),
        ("Segment an image", shapes_curl),
        ("The same from Python with tritonclient", python),
    ]


def _curl(base: str, model: str, body: object) -> str:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f"curl -s {base}/v2/models/{model}/infer -H 'Content-Type: application/json' -d {shlex.quote(data)}"
