"""The dashboard (``GET /``) in a real browser: headless Chromium against the real service.

The page is plain HTML and JavaScript, so only a browser can tell whether it works: its
EventSource, token handling and DOM updates never run in the HTTP tests. This drives Debian's
``chromium`` through its ``chromium-driver`` (Selenium downloads nothing) and keeps screenshots
in ``$MMLM_TEST_ARTIFACTS`` (else the test's tmp dir) to look at, failed or not.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import pytest
from media import TcpTsServer, mpegts_bytes
from redis_fixtures import RedisServer, free_port
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.config import Config
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.config.window import WindowConfig

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's chromium-driver, same version
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"
if not CHROMIUM.is_file():
    pytest.skip(f"no browser: {CHROMIUM} is missing ({INSTALL})", allow_module_level=True)

pytestmark = [
    pytest.mark.live,
    pytest.mark.ray,
    pytest.mark.redis,
    pytest.mark.models,
    pytest.mark.slow,
]

TOKEN = "s3cret-token"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in a container: no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    "--disable-background-networking",  # nothing but the service under test
    "--no-first-run",
    "--window-size=1280,800",
)
NOTHING = "\N{EN DASH}"  # what the page shows for a value it does not have yet

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _until(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$MMLM_TEST_ARTIFACTS`` (kept by CI), else the test's tmp dir."""
    directory = Path(os.environ.get("MMLM_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def screenshot(driver: WebDriver, path: Path) -> Path:
    driver.save_screenshot(str(path))
    logger.warning("dashboard screenshot: %s", path)
    return path


def page_errors(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Uncaught exceptions, console errors and what the page's Content-Security-Policy blocked.
    Failed requests (401s, a service that is away) are not: the page reports those itself."""
    return [
        entry
        for entry in log
        if entry["level"] == "SEVERE"
        and entry.get("source") in ("javascript", "console-api", "security")
    ]


def row(stream: str) -> str:
    return f'#streams tr[data-stream="{stream}"]'


def text(driver: WebDriver, css: str) -> str:
    """The visible text of the first match, read in one step in the page: the page redraws
    its tables on every poll, and an element found first and read after could be gone."""
    return driver.execute_script(
        "const found = document.querySelector(arguments[0]);"
        "return found ? found.innerText.trim() : '';",
        css,
    )


class FlakyProxy:
    """A TCP forwarder in front of the service that can cut every connection and then answer
    503 until restored: what a browser sees while a service behind a balancer restarts."""

    UNAVAILABLE = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up.is_set():
                self._refuse(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _refuse(self, client: socket.socket) -> None:
        client.settimeout(2)
        try:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := client.recv(65536)):
                head += chunk
            client.sendall(self.UNAVAILABLE)
        except OSError:
            pass
        client.close()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, target)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self.lock:
                self.open.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        """Drop every connection; answer 503 from now on."""
        self.up.clear()
        with self.lock:
            sockets = list(self.open)
        self._close(*sockets)

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.closed.set()
        self.cut()
        self.listener.close()


@dataclass
class Running:
    base: str  # the service itself
    proxy: FlakyProxy  # what the browser talks to
    sources: list[TcpTsServer]  # one client each

    @property
    def page(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: ModelsConfig
) -> Iterator[Running]:
    """The real service (local Ray, real Redis, tiny models) and two live MPEG-TS sources."""
    directory = tmp_path_factory.mktemp("dashboard")
    redis = RedisServer(directory / "redis")
    redis.start()
    clip = mpegts_bytes(4.0)
    sources = [TcpTsServer(clip, 4.0), TcpTsServer(clip, 4.0)]
    for source in sources:
        source.start()
    config = Config(
        decode=DecodeConfig(stall_timeout_s=3),
        models=tiny_models,
        window=WindowConfig(window_s=2.0, hop_s=2.0, max_lateness_s=2.0),
        redis=RedisConfig(url=redis.url, embedded=False),
        api=ApiConfig(api_token=TOKEN, allow_internal=["127.0.0.0/8"]),
    )
    try:
        driver.start_ray(None)
        port = free_port()
        base = driver.run_service(
            config, None, redis.url, host="127.0.0.1", port=port, jobs_dir=directory / "jobs"
        )
        proxy = FlakyProxy(port)
        try:
            yield Running(base, proxy, sources)
        finally:
            proxy.close()
    finally:
        driver.shutdown()
        for source in sources:
            source.stop()
        redis.stop()


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with its console kept; its last picture is kept as an artefact."""
    if not CHROMEDRIVER.is_file():  # with the browser there, a missing driver is a setup bug
        pytest.fail(f"{CHROMEDRIVER} is missing ({INSTALL})")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
        screenshot(driver, artifacts(tmp_path) / f"{request.node.name}.png")
    finally:
        driver.quit()


def test_streams_and_live_events_show_in_the_page_and_the_feed_resumes_after_a_drop(
    service: Running, browser: WebDriver, tmp_path: Path
) -> None:
    api = service.api()
    log: list[dict[str, Any]] = []
    browser.get(f"{service.page}/#token={TOKEN}")
    _until(lambda: "#" not in browser.current_url, "the token leaves the address bar")
    _until(lambda: text(browser, "#feed-text") == "events: live", "the event feed is live")
    assert not browser.find_element(By.ID, "signin").is_displayed()
    assert browser.find_element(By.ID, "signout").is_displayed()

    # A stream added in the page: its state, description and events show up by themselves.
    form = browser.find_element(By.ID, "add-form")
    form.find_element(By.NAME, "url").send_keys(service.sources[0].url)
    form.find_element(By.NAME, "id").send_keys("cam1")
    form.find_element(By.NAME, "name").send_keys("Loading dock")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _until(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'{row("cam1")} [data-state="streaming"]'),
        "cam1 shows as streaming",
    )
    event = _until(
        lambda: browser.find_elements(By.CSS_SELECTOR, '#events li[data-type="stream"]'),
        "a live stream event in the feed",
    )[-1]
    assert event.get_attribute("data-event-id").startswith("cam1:stream:")
    assert "cam1" in event.text and "connecting" in event.text
    description = _until(
        lambda: (desc := text(browser, f"{row('cam1')} td.desc")) != NOTHING and desc,
        "cam1's latest description",
    )
    assert description.strip() and "Loading dock" in text(browser, row("cam1"))
    assert text(browser, "#add-error") == ""
    log += browser.get_log("browser")

    # The connection drops and the service is unavailable for a while (503): the page keeps
    # trying and, once it is back, shows what was published meanwhile (it resumes after the
    # last event it saw).
    service.proxy.cut()
    _until(lambda: text(browser, "#feed-text") != "events: live", "the feed notices the drop")
    assert api.post("/streams", json={"id": "cam2", "url": service.sources[1].url}).is_success
    _until(lambda: api.get("/streams/cam2").json()["state"] == "streaming", "cam2 streams")
    _until(
        lambda: text(browser, "#feed-text") == "events: unavailable, retrying",
        "the page sees the service refuse",
    )
    service.proxy.restore()
    _until(lambda: text(browser, "#feed-text") == "events: live", "the feed is live again")

    def cam2_states() -> set[str]:
        shown = browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);",
            '#events li[data-event-id^="cam2:"] .meta',
        )
        return {meta.split(" · ")[2] for meta in shown}  # time · source · key · span

    _until(
        lambda: {"connecting", "streaming"} <= cam2_states(),
        "cam2's events, published while the page was cut off",
    )
    _until(lambda: text(browser, f"{row('cam2')} td.desc") not in ("", NOTHING), "cam2 shows")
    shown = [
        li.get_attribute("data-event-id")
        for li in browser.find_elements(By.CSS_SELECTOR, "#events li")
    ]
    assert len(shown) == len(set(shown)), shown
    screenshot(browser, artifacts(tmp_path) / "dashboard-live.png")
    log += browser.get_log("browser")

    # Remove, after the confirmation dialog: the row goes and the service forgets the stream.
    browser.find_element(By.CSS_SELECTOR, f"{row('cam1')} button.danger").click()
    browser.switch_to.alert.accept()
    _until(lambda: not browser.find_elements(By.CSS_SELECTOR, row("cam1")), "cam1's row goes")
    assert [s["id"] for s in api.get("/streams").json()] == ["cam2"]
    assert api.delete("/streams/cam2").status_code == 204
    log += browser.get_log("browser")
    assert not page_errors(log), log


def test_the_page_asks_for_the_token_refuses_a_wrong_one_and_forgets_it(
    service: Running, browser: WebDriver
) -> None:
    def shows_nothing() -> bool:
        """Nothing learnt with a token is on the page, and it does not claim to be live."""
        return (
            not browser.find_elements(By.CSS_SELECTOR, "#streams tr[data-stream]")
            and not browser.find_elements(By.CSS_SELECTOR, "#events li[data-event-id]")
            and text(browser, "#feed-text") != "events: live"
            and not browser.find_element(By.ID, "signout").is_displayed()
        )

    browser.get(f"{service.page}/")
    signin = browser.find_element(By.ID, "signin")
    _until(signin.is_displayed, "the sign-in form")
    _until(lambda: text(browser, "#feed-text") == "events: signed out", "the feed waits")
    assert shows_nothing()

    field = signin.find_element(By.NAME, "token")
    field.send_keys("wrong-token")
    signin.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _until(lambda: text(browser, "#signin-error") == "That token was refused.", "a refusal")
    assert signin.is_displayed() and shows_nothing()

    field.send_keys(TOKEN)
    signin.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _until(lambda: not signin.is_displayed(), "the sign-in form goes")
    _until(lambda: text(browser, "#feed-text") == "events: live", "the event feed is live")
    api = service.api()
    assert api.post("/streams", json={"id": "cam3", "url": service.sources[0].url}).is_success
    try:
        _until(
            lambda: (
                browser.find_elements(By.CSS_SELECTOR, row("cam3"))
                and browser.find_elements(By.CSS_SELECTOR, '#events li[data-event-id^="cam3:"]')
            ),
            "cam3 and its events",
        )
        browser.find_element(By.ID, "signout").click()
        _until(signin.is_displayed, "the sign-in form again")
        _until(shows_nothing, "the page forgets what it showed")
        assert browser.execute_script("return sessionStorage.length") == 0
        time.sleep(3.5)  # a poll later, still nothing
        assert shows_nothing()
    finally:
        api.delete("/streams/cam3")
    assert not page_errors(browser.get_log("browser"))
