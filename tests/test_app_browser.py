"""The web app in a real browser: axe-core finds no WCAG 2.2 A/AA violations, captioning works from the
keyboard alone, the caption reaches the role="status" live region, and nothing leaves 127.0.0.1.

Needs Debian's chromium at /usr/bin/chromium (or $CHROMIUM), pip ``playwright`` (its own browsers are
never downloaded) and axe-core's axe.min.js (``npm install --no-save axe-core`` in the repository, or
$AXE_CORE_JS). Run with ``pytest -m browser tests/test_app_browser.py``.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from synthetic import shape_photo

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
AXE = Path(os.environ.get("AXE_CORE_JS", ROOT / "node_modules" / "axe-core" / "axe.min.js"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
TRUTH = "a red circle on a blue background"
UPLOAD_LABEL = "Drop an image file here to upload"
STARTUP_SECONDS = 240


def _missing() -> list[str]:
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install playwright)")
    if not AXE.is_file():
        missing.append(f"{AXE} (npm install --no-save axe-core)")
    return missing


@pytest.fixture(scope="module", autouse=True)
def prerequisites():
    missing = _missing()
    if missing:  # in CI a missing tool is a failure, elsewhere a reason to skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)("browser tests need " + ", ".join(missing))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(prerequisites, tiny_model_dir, tmp_path_factory):
    """``python app.py`` with the tiny model, as a visitor's server would run it, on 127.0.0.1."""
    work = tmp_path_factory.mktemp("browser_app")
    examples = work / "examples"
    examples.mkdir()
    shape_photo("red", "circle", "blue").save(examples / "red_circle.jpg")
    port = free_port()
    env = {**os.environ, "CAPTIONER_MODEL": str(tiny_model_dir), "CAPTIONER_EXAMPLES": str(examples),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    log = (work / "app.log").open("w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], env=env, stdout=log,
                               stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the app did not start: {(work / 'app.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(prerequisites):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def color_scheme(request) -> str:
    """The visitor's preferred colour scheme (Gradio follows it): "light" unless a test asks for "dark"."""
    return getattr(request, "param", "light")


@pytest.fixture
def page(browser, server, color_scheme):
    """A fresh tab on the app; any request leaving 127.0.0.1 is blocked and recorded in page.external."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=color_scheme)
    tab = context.new_page()
    tab.external = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("data:", "blob:")) or urlparse(url).hostname in ("127.0.0.1", "localhost"):
            request_route.continue_()
        else:
            tab.external.append(url)
            request_route.abort()

    tab.route("**/*", route)
    tab.goto(server)
    tab.wait_for_selector('[role="status"]')
    tab.wait_for_selector(f'#photo button[aria-label="{UPLOAD_LABEL}"]')
    tab.wait_for_selector("#photo input[type=file]", state="attached")
    yield tab
    context.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "red_circle.png"
    shape_photo("red", "circle", "blue").save(path)
    return path


def axe_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_TAGS)
    return [f"{v['id']}: {v['help']} at {[n['target'] for n in v['nodes']]}" for v in result["violations"]]


def live_text(page) -> str:
    return page.inner_text('[role="status"][aria-live="polite"]')


def wait_for_caption(page, expected_end: str, timeout: float = 60_000) -> str:
    page.wait_for_function(
        "end => { const s = document.querySelector('[role=status]'); return s && s.textContent.endsWith(end); }",
        arg=expected_end, timeout=timeout)
    return live_text(page)


def focused(page) -> dict:
    return page.evaluate("""() => { const e = document.activeElement; const s = getComputedStyle(e);
        return {tag: e.tagName, id: e.id, label: e.getAttribute('aria-label') || '', text: e.innerText || '',
                outline: s.outlineStyle, outlineWidth: parseFloat(s.outlineWidth)}; }""")


def tab_until(page, matches, limit: int = 15) -> dict:
    for _ in range(limit):
        page.keyboard.press("Tab")
        element = focused(page)
        if matches(element):
            return element
    pytest.fail(f"Tab never reached the element; last focused: {element}")


def choose_file_with_enter(page, path: Path, attempts: int = 3) -> None:
    """Press Enter on the focused upload button and pick ``path`` in the file chooser that opens.

    On a loaded machine the first key press now and then opens no chooser (seen about once in
    ten runs, never reproduced alone), so Enter is pressed again, at most ``attempts`` times.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(attempts):
        assert focused(page)["label"] == UPLOAD_LABEL
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press("Enter")
        except PlaywrightTimeout:
            continue
        chooser.value.set_files(str(path))
        return
    pytest.fail(f"Enter on the upload button opened no file chooser in {attempts} tries")


@pytest.mark.parametrize("color_scheme", ["light", "dark"], indirect=True)
def test_no_wcag_violations_before_and_after_captioning(page, photo, tmp_path, color_scheme):
    assert axe_violations(page) == []
    page.set_input_files("#photo input[type=file]", str(photo))
    page.wait_for_selector("#photo img")
    assert page.get_attribute("#photo img", "alt") == "The photo you chose"
    page.click("#caption-button")
    text = wait_for_caption(page, f"{TRUTH}.")
    page.wait_for_selector("#heatmaps figure img")
    page.wait_for_selector("#caption-audio audio")
    assert not page.locator("table.teacher-table").first.is_visible()  # the teacher view starts collapsed
    page.get_by_text("Teacher view").click()
    page.wait_for_selector("table.teacher-table")
    assert axe_violations(page) == []
    assert page.locator("#heatmaps figure").count() == len(TRUTH.split())
    alts = page.eval_on_selector_all("#heatmaps figure img", "imgs => imgs.map(i => i.alt)")
    assert [a.split(":")[0] for a in alts] == TRUTH.split()
    assert page.locator("#heatmaps ol li").all_inner_texts() == alts
    assert page.get_by_text("Download all heatmaps as one image (PNG)").is_visible()
    assert text.startswith(("Probably", "Possibly", "I'm not sure"))
    page.screenshot(path=str(tmp_path / f"captioned_{color_scheme}.png"), full_page=True)
    assert page.external == []


def test_captioning_with_the_keyboard_alone(page, photo):
    upload = tab_until(page, lambda e: e["label"] == UPLOAD_LABEL)
    assert upload["tag"] == "BUTTON"
    choose_file_with_enter(page, photo)
    page.wait_for_selector("#photo img")
    button = tab_until(page, lambda e: e["id"] == "caption-button")
    assert button["outline"] != "none" and button["outlineWidth"] >= 2  # visible focus
    page.evaluate("""() => { const live = document.querySelector('[role=status]');
        window.liveRegion = live; window.announced = [];
        new MutationObserver(() => window.announced.push(live.textContent))
            .observe(live, {childList: true, characterData: true, subtree: true}); }""")
    page.keyboard.press("Enter")
    text = wait_for_caption(page, f"{TRUTH}.")
    assert text.startswith(("Probably", "Possibly", "I'm not sure"))
    assert focused(page)["id"] == "caption-button"  # announced by the live region; focus stays put
    # The same live element was updated in place (a replaced element would not be announced),
    # first with the busy message, then with the caption.
    assert page.evaluate("() => document.querySelector('[role=status]') === window.liveRegion")
    announced = page.evaluate("() => window.announced")
    assert announced[0] == "Describing the photo…" and announced[-1] == text
    assert page.external == []


def test_a_bad_file_gets_a_message_and_the_next_photo_still_works(page, photo, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("These are my holiday notes, not a photo.\n" * 20)
    page.set_input_files("#photo input[type=file]", str(notes))
    page.wait_for_selector("#photo img")  # uploaded (the browser cannot show it, and need not)
    page.click("#caption-button")
    page.wait_for_selector('[role="status"].error')
    assert "not a photo" in live_text(page)
    assert axe_violations(page) == []
    page.goto(page.url)
    page.wait_for_selector("#caption-button")
    page.set_input_files("#photo input[type=file]", str(photo))
    page.wait_for_selector("#photo img")
    page.click("#caption-button")
    assert wait_for_caption(page, f"{TRUTH}.")


def test_example_photo_autoplay_opacity_and_download(page, tmp_path):
    page.get_by_role("button", name="red circle").click()
    page.wait_for_selector("#photo img")
    page.get_by_label("Play the spoken caption automatically").check()
    page.click("#caption-button")
    assert wait_for_caption(page, f"{TRUTH}.")
    page.wait_for_selector("#caption-audio audio")
    assert page.eval_on_selector("#caption-audio audio", "a => a.autoplay")
    first = page.get_attribute("#heatmaps figure img", "src")
    opacity = page.get_by_label("number input for Heatmap opacity")
    opacity.fill("0.1")
    opacity.press("Enter")
    page.wait_for_function("src => document.querySelector('#heatmaps figure img').src !== src", arg=first)
    with page.expect_download() as download:
        page.get_by_text("Download all heatmaps as one image (PNG)").click()
    saved = tmp_path / "heatmaps.png"
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"\x89PNG")
