"""The dashboard in a real browser: Debian's headless chromium, driven by Selenium through chromium-driver.

While traffic flows: the model list shows every model with its state, the latency chart takes new
points, a bad request appears in the failure log, the page's filters work, and the page breaks
no rule of its Content-Security-Policy. With an admin token, the sign-in form lets the browser in.
``LEANSERVE_SCREENSHOT=docs/dashboard.png`` also saves the screenshot there (the README's picture).
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leanserve.registry import RegistryOptions
from leanserve.server import ObservabilityOptions
from leanserve.server.auth import Tokens
from tests.fixtures.onnx_models import write_marked_model, write_mlp
from tests.server.conftest import RunningServer

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed and could not be (make system-deps)",
)


def body(rows: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [0.5] * (4 * rows)}]}


def make_repository(root: Path) -> Path:
    write_mlp(root / "mlp" / "1" / "model.onnx", seed=1)
    write_mlp(root / "mlp" / "2" / "model.onnx", seed=2)
    (root / "mlp" / "model.toml").write_text('version_policy = "all"\nmax_batch_size = 16\ndefault_version = 2\n')
    (root / "mlp" / "report.html").write_text("<!doctype html><p>optimize report</p>")
    (root / "mlp" / "report.json").write_text("{}")
    write_marked_model(root / "marked" / "1" / "model.onnx", 3.0, weight_mib=0.5)
    write_marked_model(root / "lazy" / "1" / "model.onnx", 4.0, weight_mib=0.5)
    (root / "lazy" / "model.toml").write_text('load = "on_demand"\n')
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    (root / "experiments.toml").write_text(
        '[experiments.mlp-ab]\nmode = "split"\narms = [{model = "mlp", version = 1}, {model = "mlp", version = 2}]\n'
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = make_repository(tmp_path_factory.mktemp("browser"))
    running = RunningServer(
        repository,
        options=RegistryOptions(memory_budget=64 << 20),
        observability=ObservabilityOptions(sample_seconds=0.5),
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def traffic(server: RunningServer) -> Iterator[None]:
    """Four clients (so that requests batch), one failing request in forty; at most two minutes."""
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=server.url) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                model = rng.choice(["mlp", "mlp", "mlp/versions/1", "marked", "mlp-ab"])
                luck = rng.random()
                if luck < 0.02:
                    http.post(f"/v2/models/{model}/infer", content=b'{"inputs": [')
                elif luck < 0.025:
                    http.post(f"/v2/models/{rng.choice(['broken', 'ghost'])}/infer", json=body(1))  # 503, 404
                else:
                    http.post(f"/v2/models/{model}/infer", json=body(rng.choice([1, 1, 2, 4])))
                time.sleep(rng.uniform(0, 0.01))

    threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(4)]
    for thread in threads:
        thread.start()
    yield
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1440,2000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


def wait(driver: Any, condition: Callable[[Any], Any], seconds: float = 20) -> Any:
    # The page re-renders its tables on every poll: an element read between two renders is stale,
    # which means "look again", not a failure.
    return WebDriverWait(
        driver, seconds, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    ).until(condition)


def model_rows(driver: Any) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    return {row.get_attribute("data-model"): row.text for row in rows}


def experiment_card(driver: Any) -> dict[str, Any] | None:
    """The mlp-ab experiment's card as the page shows it, once both its arms have answered."""
    card: dict[str, Any] | None = driver.execute_script(
        "const c = document.querySelector('div[data-experiment=\"mlp-ab\"]');"
        "if (!c) return null;"
        "const rows = [...c.querySelectorAll('tr[data-arm]')];"
        "const arms = Object.fromEntries(rows.map(r => [r.dataset.arm, r.innerText]));"
        "return {text: c.innerText, arms: arms, empty_shown: !document.getElementById('experiments-empty').hidden};"
    )
    return card


def test_the_dashboard_follows_live_traffic(server: RunningServer, traffic: None, browser: Any, tmp_path: Path) -> None:
    browser.get(server.url + "/dashboard")
    rows = wait(browser, lambda d: (r := model_rows(d)) and len(r) == 4 and r)
    assert "v1 ready" in rows["mlp"] and "v2 ready" in rows["mlp"]
    assert "v1 failed" in rows["broken"] and "v1 unloaded" in rows["lazy"] and "on demand" in rows["lazy"]
    assert "report" in rows["mlp"]

    # The latency chart takes new points as the server samples.
    points = int(wait(browser, lambda d: d.find_element(By.ID, "chart-latency").get_attribute("data-points")))
    wait(browser, lambda d: int(d.find_element(By.ID, "chart-latency").get_attribute("data-points")) > points)
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-latency canvas")
    p99 = browser.execute_script(
        "const c = window.leanserveDashboard.charts.latency;"
        "return c.series.findIndex(s => s.label === 'mlp p99') > 0 ? c.data[c.series.findIndex("
        "s => s.label === 'mlp p99')].filter(v => v !== null).length : -1;"
    )
    assert p99 > 0
    wait(browser, lambda d: "ms" in model_rows(d)["mlp"])  # the table's p50/p99 have figures

    # The experiment in front of mlp's two versions, with both arms and their figures.
    card = wait(browser, experiment_card)  # read in one script: the page redraws every poll
    assert "split" in card["text"] and "running" in card["text"] and not card["empty_shown"]
    assert set(card["arms"]) == {"mlp:1", "mlp:2"}
    assert "control" in card["arms"]["mlp:1"] and "50.0%" in card["arms"]["mlp:2"]

    # A bad request of ours shows in the failure log, with its id, status and message.
    response = httpx.post(
        f"{server.url}/v2/models/mlp/infer", content=b"{oops", headers={"x-request-id": "browser-bad-1"}
    )
    assert response.status_code == 400
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-request-id="browser-bad-1"]'))[0]
    assert "400" in row.text and "not valid JSON" in row.text and "mlp" in row.text

    # The page's filters: 5xx hides it, 4xx shows it again.
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("5xx")
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-request-id="browser-bad-1"]'))
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("4xx")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-request-id="browser-bad-1"]'))
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("")

    time.sleep(2)  # a few more points on the charts for the picture
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    target = os.environ.get("LEANSERVE_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "dashboard.png", target)

    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems  # no script error, no Content-Security-Policy violation


def test_with_an_admin_token_the_browser_signs_in(tmp_path: Path, browser: Any) -> None:
    running = RunningServer(make_repository(tmp_path), tokens=Tokens(admin="s3cret")).start()
    try:
        browser.delete_all_cookies()
        browser.get(running.url + "/dashboard")
        field = wait(browser, lambda d: d.find_element(By.NAME, "token"))
        field.send_keys("wrong")
        field.submit()
        wait(browser, lambda d: "wrong token" in d.find_element(By.CSS_SELECTOR, ".error").text)
        field = browser.find_element(By.NAME, "token")
        field.send_keys("s3cret")
        field.submit()
        rows = wait(browser, lambda d: (r := model_rows(d)) and len(r) == 4 and r)
        assert "v2 ready" in rows["mlp"]
        assert browser.find_element(By.ID, "logout").is_displayed()
        browser.find_element(By.CSS_SELECTOR, "#logout button").click()
        wait(browser, lambda d: d.find_elements(By.NAME, "token"))  # signed out: the form again
    finally:
        browser.delete_all_cookies()
        running.stop()
