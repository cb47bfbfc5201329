"""The playground driven in a real headless browser: Debian's Chromium through Selenium.

The server is the real service on 127.0.0.1 with the demo checkpoint (a tiny model whose weights
give every task a well-formed answer). The browser uploads an image, runs OCR, reads a chart
(the re-plot appears), extracts JSON with a schema, shows a typed error, and fits a narrow
window; a second test records every request the page makes (Chrome's performance log) and
finds none outside the server; a third asks for the API key of a server that has one.

Needs ``chromium`` and ``chromium-driver`` (Debian packages; CI's ``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw

from mississippi_tools import MississippiVLM
from mississippi_tools.testing import DEMO_ANSWERS, DEMO_EXTRACT_SCHEMA, build_demo_checkpoint
from tests.documents import Page, build_pdf
from tests.server.live import LiveServer, quiet_settings, run_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 90.0  # seconds any one wait may take on a loaded 2-core machine
_SELECTED = "Selected: press Ctrl+C (or ⌘C) to copy."  # headless Chromium may refuse the clipboard


@pytest.fixture(scope="module")
def demo_vlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MississippiVLM]:
    checkpoint = build_demo_checkpoint(tmp_path_factory.mktemp("demo") / "demo")
    vlm = MississippiVLM.load(checkpoint, device="cpu", dtype="float32")
    yield vlm
    vlm.close()


@pytest.fixture(scope="module")
def demo_server(demo_vlm: MississippiVLM) -> Iterator[LiveServer]:
    with run_server(quiet_settings(), demo_vlm) as server:
        yield server


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: install Debian's browser with "
            "`apt-get install -y chromium chromium-driver` (CI's .ci/run does)"
        )


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium with its performance log on (every network request is recorded)."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1600",
        # no background traffic of the browser's own (updates, safe browsing, sync ...)
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message=what)


def _by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: _by_id(d, "task").is_enabled(), "the task list to load")


def _choose_task(driver: Any, name: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(_by_id(driver, "task")).select_by_value(name)


def _run(driver: Any, result_type: str) -> Any:
    """Click Run and wait for the result view (or fail with the error the page shows)."""
    from selenium.webdriver.common.by import By

    _by_id(driver, "run").click()

    def done(d: Any) -> Any:
        error = _by_id(d, "error")
        if error.is_displayed():
            raise AssertionError(f"the page shows an error: {error.text}")
        views = d.find_elements(By.CSS_SELECTOR, f'#result-view[data-type="{result_type}"]')
        return views[0] if views and _by_id(d, "run").is_enabled() else None

    return _wait(driver, done, f"the {result_type} result")


def _shown_json(driver: Any) -> Any:
    """The result as the page shows it under "Result as JSON" (also while folded)."""
    script = "return document.getElementById('raw-json').textContent"
    return json.loads(driver.execute_script(script))


def _chart_png(path: Path) -> Path:
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    draw.text((160, 10), "Monthly sales", fill="black")
    for i, height in enumerate((180, 220, 160)):
        draw.rectangle((80 + i * 120, 290 - height, 160 + i * 120, 290), fill="navy")
    image.save(path)
    return path


def test_upload_ocr_chart_and_extraction_in_the_browser(
    browser: Any, demo_server: LiveServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(browser, f"{demo_server.url}/playground")
    image = _chart_png(tmp_path / "sales.png")
    _by_id(browser, "file").send_keys(str(image))
    _wait(browser, lambda d: _by_id(d, "preview-figure").is_displayed(), "the preview")

    # OCR: the text streams into the answer box, then the typed result and its timings.
    _choose_task(browser, "ocr")
    view = _run(browser, "OCRResult")
    assert view.text == DEMO_ANSWERS["ocr"]
    assert _by_id(browser, "stream").text == DEMO_ANSWERS["ocr"]
    timings = _by_id(browser, "timings").text
    assert "Time: total" in timings and "Tiles" in timings and "Vision cache" in timings

    # A region of the image: read, then outlined on the preview.
    browser.find_element(By.CSS_SELECTOR, "details.settings summary").click()
    region = _by_id(browser, "region")
    region.send_keys("0,0,0.5,0.5")
    assert "region=[0,0,0.5,0.5]" in _by_id(browser, "snippet-curl").text
    _run(browser, "OCRResult")
    box = _wait(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#regions .box"), "the outline"
    )[0]
    assert box.get_attribute("data-region") == "0,0,240,160"  # pixels of the 480x320 image
    shown_width = _by_id(browser, "preview").size["width"]
    assert abs(box.size["width"] - shown_width / 2) <= 2
    region.clear()

    # A chart: re-plotted as SVG beside the original, and its values as a table.
    _choose_task(browser, "read_chart")
    view = _run(browser, "ChartData")
    plot = view.find_element(By.CSS_SELECTOR, "svg#chart-plot")
    assert plot.is_displayed()
    assert len(plot.find_elements(By.CSS_SELECTOR, "rect.bar")) == 3
    assert "Monthly sales" in plot.get_attribute("aria-label")
    original = view.find_element(By.CSS_SELECTOR, "figure img")
    assert original.get_attribute("src").startswith("blob:")
    cells = [td.text for td in view.find_elements(By.CSS_SELECTOR, "table.data td")]
    assert cells == ["January", "1000", "February", "1200", "March", "900"]

    # Extraction with a JSON Schema typed into the editor, with per-field confidence.
    _choose_task(browser, "extract")
    editor = _by_id(browser, "arg-json_schema")
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    editor.send_keys(json.dumps(DEMO_EXTRACT_SCHEMA))
    _by_id(browser, "arg-confidence").click()
    view = _run(browser, "ExtractionResult")
    rows = {
        row.get_attribute("data-pointer"): row
        for row in view.find_elements(By.CSS_SELECTOR, ".row[data-pointer]")
    }
    assert set(rows) == {"/invoice_number", "/date", "/total", "/paid"}
    assert '"12345"' in rows["/invoice_number"].text
    for row in rows.values():
        confidence = float(row.get_attribute("data-confidence"))
        assert 0 <= confidence <= 1
        assert {"conf-low", "conf-mid", "conf-high"} & set(row.get_attribute("class").split())
    shown = _shown_json(browser)
    assert shown["data"] == {
        "invoice_number": "12345",
        "date": "2024-10-17",
        "total": 1200.0,
        "paid": False,
    }
    # The same call as curl and Python, the key never copied.
    curl = _by_id(browser, "snippet-curl").text
    assert f"{demo_server.url}/v1/extract" in curl and "sales.png" in curl
    assert "confidence=true" in curl and '"invoice_number"' in curl
    python = _by_id(browser, "snippet-python").text
    assert "httpx.post(" in python and '"confidence": "true"' in python
    # ... and both run as they are, giving the same data.
    ran = subprocess.run(
        ["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["data"] == shown["data"]
    ran = subprocess.run(
        [sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT
    )
    assert ran.returncode == 0, ran.stderr
    assert "'invoice_number': '12345'" in ran.stdout
    _by_id(browser, "copy-curl").click()
    _wait(
        browser,
        lambda d: _by_id(d, "copy-status").text in ("Copied.", _SELECTED),
        "the copy to be confirmed",
    )

    # A table, as a table.
    _choose_task(browser, "read_table")
    view = _run(browser, "TableData")
    headers = [th.text for th in view.find_elements(By.CSS_SELECTOR, "table.data th")]
    assert headers == ["Product", "Price", "Quantity"]
    assert len(view.find_elements(By.CSS_SELECTOR, "table.data tbody tr")) == 2
    _choose_task(browser, "extract")
    editor = _by_id(browser, "arg-json_schema")

    # The server's typed error, as it answered it.
    bad = {"type": "object", "properties": {"a": {"type": "nope"}}}
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    editor.send_keys(json.dumps(bad))
    _by_id(browser, "run").click()
    error = _wait(
        browser,
        lambda d: _by_id(d, "error") if _by_id(d, "error").is_displayed() else None,
        "the error",
    )
    expected = httpx.post(
        f"{demo_server.url}/v1/extract",
        files={"image": ("sales.png", image.read_bytes())},
        data={"json_schema": json.dumps(bad)},
        timeout=60,
    )
    body = expected.json()["error"]
    assert error.get_attribute("data-code") == body["code"]
    assert error.get_attribute("data-status") == str(expected.status_code)
    assert body["message"] in error.text

    browser.save_screenshot(str(tmp_path / "playground.png"))
    with Image.open(tmp_path / "playground.png") as shot:
        assert shot.format == "PNG" and shot.size[0] > 600

    # Keyboard: the controls come in reading order when tabbing from the top.
    from selenium.webdriver.common.action_chains import ActionChains

    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    order: list[str] = []
    for _ in range(40):  # keys to the page, not to an element (a file input takes them as paths)
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = browser.switch_to.active_element.get_attribute("id")
        if focused:
            order.append(focused)
        if focused == "run":
            break
    assert order.index("file") < order.index("task") < order.index("run"), order
    for element_id in ("file", "task", "max_new_tokens", "arg-json_schema", "arg-confidence"):
        label = browser.find_elements(By.CSS_SELECTOR, f'label[for="{element_id}"]')
        assert label, f"#{element_id} has no label"

    # A narrow window: one column, nothing wider than the window.
    browser.set_window_size(380, 900)
    _wait(
        browser,
        lambda d: d.execute_script("return window.innerWidth") < 400,
        "the narrow window",
    )
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0
    assert _by_id(browser, "run").is_displayed()
    browser.save_screenshot(str(tmp_path / "playground-narrow.png"))


def _requests(driver: Any) -> list[str]:
    """URLs of every request the page made (CDP Network.requestWillBeSent events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_the_page_makes_no_request_outside_the_server(
    browser: Any, demo_server: LiveServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, f"{demo_server.url}/")
    # The task list is the server's catalogue, as GET /v1/tasks reports it.
    served = httpx.get(f"{demo_server.url}/v1/tasks", timeout=30).json()["data"]
    options = browser.find_elements(By.CSS_SELECTOR, "#task option")
    assert [o.get_attribute("value") for o in options] == [t["name"] for t in served]
    document = tmp_path / "two-pages.pdf"
    document.write_bytes(build_pdf([Page("scan"), Page("stamp")]))
    _by_id(browser, "file").send_keys(str(document))
    second = _wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#page-list button[data-page="2"]'),
        "the page thumbnails",
    )[0]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#page-list button img")) == 2
    second.click()
    assert second.get_attribute("aria-pressed") == "true"
    _choose_task(browser, "read_chart")
    view = _run(browser, "ChartData")
    assert view.find_element(By.CSS_SELECTOR, "svg#chart-plot").is_displayed()
    shown = _shown_json(browser)
    assert shown["meta"]["page"] == 2

    # A document task reads every page together (not streamed): one result for the document.
    _choose_task(browser, "extract_document")
    view = _run(browser, "DocumentExtractionResult")
    shown = _shown_json(browser)
    assert shown["data"]["invoice_number"] == "12345"
    assert '"12345"' in view.text

    urls = _requests(browser)
    origin = urlsplit(demo_server.url)
    paths = {urlsplit(url).path for url in urls if url.startswith(demo_server.url)}
    # The log saw the page's own traffic, so an outside request would be seen too.
    assert {"/", "/playground/app.js", "/v1/tasks", "/v1/pages", "/v1/read_chart"} <= paths
    assert "/v1/extract_document" in paths
    outside = [
        url
        for url in urls
        if urlsplit(url).scheme not in ("data", "blob")
        and (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
    ]
    assert outside == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []  # no blocked resource, no script error


def test_the_page_asks_for_the_api_key_once_and_sends_it(
    browser: Any, demo_vlm: MississippiVLM, tmp_path: Path
) -> None:
    with run_server(quiet_settings(api_key="pg-browser-key"), demo_vlm) as server:
        browser.get(f"{server.url}/playground")
        dialog = _wait(
            browser,
            lambda d: _by_id(d, "key-dialog") if _by_id(d, "key-dialog").is_displayed() else None,
            "the API key dialog",
        )
        assert browser.switch_to.active_element.get_attribute("id") == "api-key"
        _by_id(browser, "api-key").send_keys("not-the-key")
        _by_id(browser, "key-save").click()
        # The server refuses it: the dialog comes back with the server's message.
        _wait(
            browser,
            lambda d: "not valid" in _by_id(d, "key-why").text and dialog.is_displayed(),
            "the dialog to ask again",
        )
        _by_id(browser, "api-key").send_keys("pg-browser-key")
        _by_id(browser, "key-save").click()
        _wait(browser, lambda d: _by_id(d, "task").is_enabled(), "the task list")
        stored = browser.execute_script(
            "return sessionStorage.getItem('mississippi-tools.api-key')"
        )
        assert stored == "pg-browser-key"
        image = _chart_png(tmp_path / "chart.png")
        _by_id(browser, "file").send_keys(str(image))
        _choose_task(browser, "ocr")
        assert _run(browser, "OCRResult").text == DEMO_ANSWERS["ocr"]
        assert "$MISSISSIPPI_API_KEY" in _by_id(browser, "snippet-curl").text
        assert "pg-browser-key" not in _by_id(browser, "snippet-curl").text
        # The snippets send the key from the environment, and quote awkward text safely.
        _choose_task(browser, "ask")
        _by_id(browser, "arg-question").send_keys('What\'s the "total"? $HOME `id` \\ ok')
        curl = _by_id(browser, "snippet-curl").text
        python = _by_id(browser, "snippet-python").text
        assert "pg-browser-key" not in curl + python
        environment = {**os.environ, "MISSISSIPPI_API_KEY": "pg-browser-key"}
        for command in (["bash", "-c", curl], [sys.executable, "-c", python]):
            ran = subprocess.run(
                command, cwd=tmp_path, env=environment, capture_output=True, text=True,
                timeout=WAIT,
            )  # fmt: skip
            assert ran.returncode == 0, ran.stderr
            assert DEMO_ANSWERS["ask"] in ran.stdout
        # Reloading the tab keeps the key: the dialog is not shown again.
        browser.refresh()
        _wait(browser, lambda d: _by_id(d, "task").is_enabled(), "the task list after reload")
        assert not _by_id(browser, "key-dialog").is_displayed()
