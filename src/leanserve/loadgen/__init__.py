"""``leanserve bench``'s load generator as a library: ``run(url, model, concurrency=[1, 8, 32])``.

Modules: :mod:`.schedule` (closed/open loop, arrivals, the model mix), :mod:`.histogram` (latency
to 0.1%), :mod:`.client` (the HTTP/1.1 client on uvloop + httptools), :mod:`.inputs` (requests
from the model's metadata, a file or the demo), :mod:`.windows` (measurement windows, stability,
confidence intervals), :mod:`.slo` (the rate search), :mod:`.runner` (a run), :mod:`.report`
(table, JSON, CSV, plot), :mod:`.results` (what a run returns).
"""

from .histogram import Histogram
from .inputs import TensorSpec
from .results import Report, Result, SloSearch
from .runner import prepare, run
from .schedule import Level, parse_mix

__all__ = ["Histogram", "Level", "Report", "Result", "SloSearch", "TensorSpec", "parse_mix", "prepare", "run"]
