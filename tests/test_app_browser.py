"""The web app in a real browser: axe-core finds no WCAG 2.2 A/AA violations, captioning works from the
keyboard alone, the caption reaches the role="status" live region, and nothing leaves 127.0.0.1.

Needs Debian's chromium at /usr/bin/chromium (or $CHROMIUM), pip ``playwright`` (its own browsers are
never downloaded) and axe-core's axe.min.js (``npm install --no-save axe-core`` in the repository, or
$AXE_CORE_JS). Run with ``pytest -m browser tests/test_app_browser.py``.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from helpers import NOT_A_PHOTO, TRUTH, AppDidNotStart, start_app, stop
from synthetic import shape_photo

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
AXE = Path(os.environ.get("AXE_CORE_JS", ROOT / "node_modules" / "axe-core" / "axe.min.js"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a test pattern as webcam
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
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


@pytest.fixture(scope="module")
def server(prerequisites, tiny_model_dir, tmp_path_factory):
    """``python app.py`` with the tiny model, as a visitor's server would run it, on 127.0.0.1."""
    work = tmp_path_factory.mktemp("browser_app")
    examples = work / "examples"
    examples.mkdir()
    shape_photo("red", "circle", "blue").save(examples / "red_circle.jpg")
    seeds = work / "seeds"  # a "seed design" for Compare: the tiny model again (the shipped seeds are not loaded)
    shutil.copytree(tiny_model_dir, seeds / "tiny")
    # float32 like tiny_captioner, which some tests compare the page with: on noise, int8 features (if
    # the server measured int8 fastest) can change the tiny model's words
    env = {"CAPTIONER_MODEL": str(tiny_model_dir), "CAPTIONER_EXAMPLES": str(examples),
           "CAPTIONER_SEEDS": str(seeds), "CAPTIONER_ENCODER_DTYPE": "float32"}
    try:
        process, url = start_app(env, work / "app.log", STARTUP_SECONDS, cwd=work)
    except AppDidNotStart as exc:
        pytest.fail(str(exc))
    yield url
    stop(process)


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
def viewport(request) -> dict:
    """The tab's size: 1280 x 900 unless a test asks for another."""
    return getattr(request, "param", {"width": 1280, "height": 900})


@pytest.fixture
def page(browser, server, color_scheme, viewport):
    """A fresh tab on the app; any request leaving 127.0.0.1 is blocked and recorded in page.external."""
    context = browser.new_context(viewport=viewport, color_scheme=color_scheme)
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


@pytest.fixture(scope="module")
def tall_photo(tmp_path_factory) -> Path:
    """A photo five times as tall as it is wide: the caption must still come into view."""
    path = tmp_path_factory.mktemp("photos") / "tall.png"
    shape_photo("red", "circle", "blue").resize((240, 1200)).save(path)
    return path


def choose(page, path: Path) -> str:
    """Upload ``path`` through the photo input and wait for the announcement; returns it."""
    page.set_input_files("#photo input[type=file]", str(path))
    page.wait_for_function("name => document.querySelector('[role=status]').textContent.includes(name)",
                           arg=path.name, timeout=30_000)
    return live_text(page)


def caption(page, path: Path) -> str:
    choose(page, path)
    page.click("#caption-button")
    return wait_for_caption(page, f"{TRUTH}.")


def watch_live_region(page) -> None:
    """Record every text the live region takes, in window.announced."""
    page.evaluate("""() => { const live = document.querySelector('[role=status]');
        window.liveRegion = live; window.announced = [];
        new MutationObserver(() => window.announced.push(live.textContent))
            .observe(live, {childList: true, characterData: true, subtree: true}); }""")


def accessibility_tree(page, selector: str = "body") -> str:
    return page.locator(selector).aria_snapshot()


@pytest.mark.parametrize("color_scheme", ["light", "dark"], indirect=True)
def test_no_wcag_violations_before_and_after_captioning(page, photo, tmp_path, color_scheme):
    assert axe_violations(page) == []
    text = caption(page, photo)
    assert text.startswith(("Probably", "Possibly", "I'm not sure"))
    page.wait_for_selector("#heatmaps li img")
    page.wait_for_selector("#caption-audio audio")
    assert not page.locator("table.teacher-table").first.is_visible()  # the teacher view starts collapsed
    page.get_by_role("button", name="Beam candidates and word probabilities").click()
    page.wait_for_selector("table.teacher-table")
    assert axe_violations(page) == []
    items = page.locator("#heatmaps li")
    assert items.count() == len(TRUTH.split())
    assert [t.split(":")[0] for t in items.all_inner_texts()] == TRUTH.split()
    assert page.get_by_text("Download all heatmaps as one image (JPEG)").is_visible()
    # The caption box follows the colour scheme (problem 13): dark on light, light on dark.
    background, color = page.eval_on_selector(
        "#live-caption .live-caption", "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]")
    luminance = lambda css: sum(float(v) for v in re.findall(r"[\d.]+", css)[:3]) / 3  # noqa: E731
    assert (luminance(background) < 60 and luminance(color) > 200) if color_scheme == "dark" else \
        (luminance(background) > 200 and luminance(color) < 60)
    page.screenshot(path=str(tmp_path / f"captioned_{color_scheme}.png"), full_page=True)
    assert page.external == []


def test_captioning_with_the_keyboard_alone(page, photo):
    watch_live_region(page)
    upload = tab_until(page, lambda e: e["label"] == UPLOAD_LABEL)
    assert upload["tag"] == "BUTTON"
    choose_file_with_enter(page, photo)
    # The choice is announced, and focus moves to the Caption button (not the page body).
    page.wait_for_function("() => document.activeElement.id === 'caption-button'", timeout=30_000)
    from PIL import Image

    with Image.open(photo) as image:
        width, height = image.size
    assert live_text(page) == f"Photo chosen: {photo.name}, {width} by {height} pixels. Press Caption to describe it."
    button = focused(page)
    assert button["outline"] != "none" and button["outlineWidth"] >= 2  # visible focus
    page.keyboard.press("Enter")
    text = wait_for_caption(page, f"{TRUTH}.")
    assert text.startswith(("Probably", "Possibly", "I'm not sure"))
    assert focused(page)["id"] == "caption-button"  # announced by the live region; focus stays put
    # The same live element was updated in place (a replaced element would not be announced).
    assert page.evaluate("() => document.querySelector('[role=status]') === window.liveRegion")
    announced = page.evaluate("() => window.announced")
    assert announced[0].startswith("Photo chosen") and announced[-2:] == ["Describing the photo…", text]
    page.wait_for_selector("#speak-button:not([disabled])")
    assert tab_until(page, lambda e: e["id"] == "speak-button", limit=3)["text"] == "Read aloud again"
    assert page.external == []


def test_a_new_photo_clears_the_old_results_and_is_announced(page, photo, tmp_path):
    caption(page, photo)
    page.wait_for_selector("#heatmaps li img")
    page.wait_for_selector("#caption-audio audio")
    other = tmp_path / "green_square.png"
    shape_photo("white", "square", "green").resize((320, 200)).save(other)
    watch_live_region(page)
    assert choose(page, other) == "Photo chosen: green_square.png, 320 by 200 pixels. Press Caption to describe it."
    assert TRUTH not in page.inner_text("body")  # no caption, heatmap text or table of the old photo
    assert page.locator("#heatmaps li").count() == 0 and page.locator("#caption-audio audio").count() == 0
    assert page.locator("table.teacher-table").count() == 0
    assert page.is_disabled("#speak-button")
    assert all(TRUTH not in said for said in page.evaluate("() => window.announced"))
    page.wait_for_function("() => document.activeElement.id === 'caption-button'")
    page.get_by_role("button", name="Remove Image").click()  # removing the photo is announced too
    page.wait_for_function("() => document.querySelector('[role=status]').textContent.startsWith('No photo chosen.')")


def test_a_file_that_is_not_a_photo_is_reported_when_chosen(page, photo, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_bytes(NOT_A_PHOTO)
    page.set_input_files("#photo input[type=file]", str(notes))
    page.wait_for_selector('[role="status"].error')  # before Caption is pressed
    assert live_text(page).startswith("notes.png cannot be described: ") and "not a photo" in live_text(page)
    assert page.locator("#photo img").count() == 0  # no broken picture that looks accepted
    page.wait_for_function(f"() => document.activeElement.getAttribute('aria-label') === '{UPLOAD_LABEL}'")
    assert axe_violations(page) == []
    assert caption(page, photo).endswith(f"{TRUTH}.")


def test_an_example_photo_is_announced_then_autoplay_opacity_and_download(page, tmp_path):
    page.get_by_role("button", name="red circle").click()
    page.wait_for_function("() => document.querySelector('[role=status]').textContent.startsWith("
                           "'Photo chosen: red_circle.jpg')")
    page.wait_for_function("() => document.activeElement.id === 'caption-button'")
    page.get_by_label("Play the spoken caption automatically").check()
    page.click("#caption-button")
    assert wait_for_caption(page, f"{TRUTH}.")
    page.wait_for_selector("#caption-audio audio")
    assert page.eval_on_selector("#caption-audio audio", "a => a.autoplay")
    first = page.get_attribute("#heatmaps li img", "src")
    opacity = page.get_by_role("spinbutton", name="Heatmap opacity (percent)")
    opacity.fill("10")
    opacity.press("Enter")
    page.wait_for_function("src => document.querySelector('#heatmaps li img').src !== src", arg=first)
    with page.expect_download() as download:
        page.get_by_text("Download all heatmaps as one image (JPEG)").click()
    saved = tmp_path / "heatmaps.jpg"
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"\xff\xd8\xff")


def test_the_teacher_toggle_has_a_plain_name_and_says_whether_it_is_open(page, photo):
    caption(page, photo)
    toggle = page.get_by_role("button", name="Beam candidates and word probabilities", exact=True)
    assert toggle.get_attribute("aria-expanded") == "false"
    assert "▼" not in accessibility_tree(page, "#teacher-view")
    toggle.click()
    page.wait_for_function("() => document.querySelector('#teacher-view button').getAttribute('aria-expanded')"
                           " === 'true'")
    table = page.get_by_role("table", name="Beam candidates, best first.", exact=False)
    table.wait_for(state="visible", timeout=10_000)  # the panel renders just after the toggle says so
    assert table.is_visible()
    assert "[expanded]" in accessibility_tree(page, "#teacher-view")
    toggle.press("Enter")  # closes from the keyboard too
    page.wait_for_function("() => document.querySelector('#teacher-view button').getAttribute('aria-expanded')"
                           " === 'false'")


def test_the_step_through_moves_by_keyboard_and_by_its_number_box(page, photo):
    caption(page, photo)
    page.get_by_role("button", name="Beam candidates and word probabilities").click()
    page.wait_for_selector("#step-view .step-summary")
    words = TRUTH.split()
    step_text = lambda: page.inner_text("#step-view .step-summary")  # noqa: E731
    assert step_text().startswith(f"Step 1 of {len(words) + 1}. Caption so far: nothing yet. Chosen word: {words[0]}")
    slider = page.locator("#step-slider input[type=range]")
    slider.focus()
    slider.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#step-view .step-summary').textContent"
                           ".startsWith('Step 2 of')", timeout=30_000)
    assert f"Caption so far: {words[0]}. Chosen word: {words[1]}" in step_text()
    assert page.locator("#step-view img").get_attribute("alt").startswith(f"Where the model looked for {words[1]}")
    box = page.locator("#step-slider input[type=number]")
    assert box.count() == 1 and page.get_by_label("Decoding step", exact=False).count() >= 1
    box.fill(str(len(words) + 1))
    box.press("Enter")
    page.wait_for_function("n => document.querySelector('#step-view .step-summary').textContent"
                           ".startsWith(`Step ${n} of`)", arg=len(words) + 1, timeout=30_000)
    assert "Chosen word: (end of caption)" in step_text() and page.locator("#step-view img").count() == 0
    compare = page.get_by_role("button", name="Compare models on this photo")
    compare.focus()
    compare.press("Enter")
    page.wait_for_selector("#compare-view table.teacher-table", timeout=60_000)
    assert TRUTH in page.inner_text("#compare-view")
    assert axe_violations(page) == []


def test_read_aloud_waits_for_a_caption_and_the_player_is_named_with_one_download(page, photo):
    assert page.is_disabled("#speak-button")  # nothing to read yet
    caption(page, photo)
    page.wait_for_selector("#caption-audio audio")
    player = page.get_by_label("Spoken caption", exact=True)  # found by its accessible name
    assert player.count() == 1 and player.evaluate("e => e.tagName") == "AUDIO"
    links = page.locator("#caption-audio a")
    assert links.count() == 1 and links.inner_text() == "Download the spoken caption (WAV)"
    assert page.locator("#caption-audio a button, #caption-audio button").count() == 0
    assert page.is_enabled("#speak-button")


def test_each_setting_is_one_tab_stop_described_by_its_hint(page):
    settings = ["Beam width", "Speech rate (words per minute)", "Heatmap opacity (percent)",
                "Play the spoken caption automatically"]
    first = tab_until(page, lambda e: e["label"] == settings[0], limit=40)
    assert first["tag"] == "INPUT"
    names = [settings[0]]
    for _ in settings[1:]:
        page.keyboard.press("Tab")
        names.append(page.evaluate("() => document.activeElement.getAttribute('aria-label') || "
                                   "document.activeElement.closest('label').innerText.trim()"))
    assert names == settings  # no "range slider" twins and no reset buttons between them
    for name in settings[:3]:
        control = page.get_by_role("spinbutton", name=name, exact=True)
        hint = page.evaluate("id => document.getElementById(id).textContent",
                             control.get_attribute("aria-describedby"))
        assert len(hint) > 20, name
    assert "range" not in accessibility_tree(page).lower()


def test_each_part_of_the_page_has_a_heading(page):
    headings = page.get_by_role("heading").all_inner_texts()
    assert headings[:6] == ["Describe a photo", "Photo", "Caption", "Settings", "Where the model looked",
                            "Teacher view"]
    assert page.get_by_role("heading", level=1).count() == 1


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}],
                         indirect=True)
def test_the_caption_comes_into_view_when_it_arrives(page, tall_photo, viewport):
    page.set_input_files("#photo input[type=file]", str(tall_photo))
    page.wait_for_function("() => document.activeElement.id === 'caption-button'", timeout=30_000)
    page.keyboard.press("Enter")
    page.wait_for_selector('[role="status"].caption', timeout=60_000)
    page.wait_for_timeout(300)  # the scroll follows the caption's arrival
    box = page.eval_on_selector("#live-caption .live-caption", "e => { const r = e.getBoundingClientRect();"
                                " return [r.top, r.bottom]; }")
    assert 0 <= box[0] and box[1] <= viewport["height"], box
    assert focused(page)["id"] == "caption-button"  # scrolled, not focused: the announcement is not cut off


def test_text_follows_the_browsers_font_size_and_the_page_fits_320_pixels(page, photo):
    caption(page, photo)
    page.wait_for_selector(".heatmap-text")
    sample = """() => Object.fromEntries([
        ['body text', 'h1 + p, .prose p'], ['label', '#beam-width [data-testid=block-info]'],
        ['hint', '#beam-width .info-text'], ['caption', '#live-caption .live-caption'],
        ['heatmap text', '.heatmap-text'], ['button', '#caption-button']
      ].map(([name, selector]) => [name, parseFloat(getComputedStyle(document.querySelector(selector)).fontSize)]))"""
    normal = page.evaluate(sample)
    assert min(normal.values()) >= 16, normal
    cdp = page.context.new_cdp_session(page)
    cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 32, "fixed": 26}})  # the browser's font setting
    page.reload()
    page.wait_for_selector('[role="status"]')
    caption(page, photo)
    page.wait_for_selector(".heatmap-text")
    doubled = page.evaluate(sample)
    for name, size in normal.items():
        assert doubled[name] == pytest.approx(2 * size, rel=0.05), (name, normal, doubled)
    cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 16, "fixed": 13}})
    page.set_viewport_size({"width": 320, "height": 640})
    page.wait_for_timeout(300)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 320


def test_the_page_says_the_hedged_sentence_of_the_one_describe_call(page, tmp_path, tiny_captioner):
    """Whatever the confidence, the page shows and speaks Description.hedged (grammatical, see
    captioner.hedging), never a wording of its own. Noise is a photo the tiny model is unsure of."""
    import numpy as np
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), np.uint8)).save(noise)
    expected = tiny_captioner.describe(str(noise), tiny_captioner.config.beam_size).hedged
    choose(page, noise)
    page.click("#caption-button")
    page.wait_for_selector('[role="status"].caption', timeout=60_000)
    assert live_text(page) == expected
    assert expected[0].isupper() and expected.endswith(".") and "  " not in expected


def test_a_webcam_photo_is_announced_like_an_upload(page):
    page.context.grant_permissions(["camera"])
    page.get_by_role("button", name="Capture from camera").click()
    page.get_by_role("button", name="Click to Access Webcam").click()
    page.wait_for_function("() => { const v = document.querySelector('#photo video'); return v && v.readyState >= 2; }",
                           timeout=30_000)  # the camera is streaming
    page.get_by_role("button", name="capture photo").click()
    page.wait_for_function("() => document.querySelector('[role=status]').textContent.startsWith('Photo chosen: ')",
                           timeout=30_000)
    assert live_text(page).endswith("pixels. Press Caption to describe it.")
    page.wait_for_function("() => document.activeElement.id === 'caption-button'")
