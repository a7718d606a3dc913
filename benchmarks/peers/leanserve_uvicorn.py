"""leanserve's own handlers as a Starlette app under uvicorn: measures what a framework costs on the hot path.

Run as: python benchmarks/peers/leanserve_uvicorn.py REPOSITORY PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from leanserve.server import asgi_app

if __name__ == "__main__":
    uvicorn.run(
        asgi_app(Path(sys.argv[1])),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
