"""The web page in a real headless browser: Debian's chromium driven by Playwright's Python API, against
``live_server`` (a real ``vidsearch serve`` on a loopback port over a real collection of 5 sample videos).

Uploads a real query clip through the page's file input and checks what the page shows against the API's
own answers: the result rows in the API's order with the clip's source first, every match bar at its
time on both timelines (measured in pixels), the player at the match's start playing the media URL, and
the videos page listing every indexed video. The page must log no console error and request nothing
but the server it came from. Screenshots go to ``test-artifacts/browser/`` (or $VIDSEARCH_TEST_ARTIFACTS).

Offline: Playwright's own browser download is not used (``executable_path`` is the system chromium).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("VIDSEARCH_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_KEY = "vidsearch.token"  # the page's localStorage key (static/app.js)
PX = 2.0  # pixel slack of a bar's edges (sub-pixel layout and rounding)
MIN_BAR_PX = 3.0  # style.css: .bar { min-width: 3px }


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright, once for this module; skipped if either is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"no system chromium at {CHROMIUM}: install Debian's 'chromium' package (make samples does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install 'vidsearch[dev]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Where the screenshots go (kept after the run, gitignored)."""
    path = ARTIFACTS / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class PageLog:
    """What a page did besides drawing: console errors, uncaught exceptions, every URL it requested."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        """Requested URLs that are neither loopback HTTP nor the page's own blob:/data: objects."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("blob", "data"):
                continue
            if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
                out.append(url)
        return out


def _open_page(browser: Any, token: str | None) -> tuple[Any, Any, PageLog]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    if token:  # a user who entered it before: the page reads it from localStorage
        context.add_init_script(f"localStorage.setItem({json.dumps(TOKEN_KEY)}, {json.dumps(token)})")
    page = context.new_page()
    page.set_default_timeout(20_000)
    log = PageLog()
    page.on("console", lambda msg: log.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    page.on("request", lambda req: log.requests.append(req.url))
    return context, page, log


# resolves to whether an <img> loaded (waits for it if it is still loading)
_IMAGE_LOADED = """img => img.complete && img.naturalWidth > 0 ? true : img.complete ? false : new Promise(done => {
    img.addEventListener('load', () => done(img.naturalWidth > 0));
    img.addEventListener('error', () => done(false));
})"""


# form controls with no label and buttons with no name, over the whole document (every view)
_UNNAMED = """() => [...document.querySelectorAll('input, select, textarea, button')].filter(el => {
    if (el.type === 'hidden') return false;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    return !(named || (el.tagName === 'BUTTON' && el.textContent.trim()));
}).map(el => el.outerHTML.slice(0, 120))"""


def _api(live_server: Any, path: str) -> Any:
    """GET an API route directly (the test's own view of the truth, not through the page)."""
    import httpx

    headers = {"Authorization": f"Bearer {live_server.token}"} if live_server.token else {}
    resp = httpx.get(live_server.url.rstrip("/") + path, headers=headers, timeout=30)
    resp.raise_for_status()
    return resp.json()


def _all_videos(live_server: Any) -> list[dict[str, Any]]:
    page = _api(live_server, "/videos?offset=0&limit=1000")
    assert len(page["videos"]) == page["total"], "the collection has more videos than one page: page through it"
    return page["videos"]


def _clip_duration(path: Path) -> float:
    """Seconds of a query clip, after checking its frames carry timestamps over >= 2 s."""
    import av

    with av.open(str(path)) as container:
        times = [f.time for f in container.decode(video=0) if f.time is not None]
        seconds = float(container.duration or 0) / 1e6
    span = times[-1] - times[0] if times else 0.0
    assert span >= 2.0, (f"{path.name} is no 3-5 s clip: its {len(times)} frames span {span:.2f} s (the container "
                         f"says {seconds:.2f} s); the fixture must give its frames timestamps (pts)")
    return seconds or span


# what tests/serve/conftest.py's ``query_clip`` is: seconds 3 to 7 of bikes.mp4, re-encoded
CLIP_SOURCE, CLIP_START = "bikes.mp4", 3.0


def _clip_facts(query_clip: Path, videos: dict[str, dict[str, Any]]) -> tuple[Path, str, float]:
    """(the clip, id of the indexed video it was cut from, its start second there)."""
    assert query_clip.name.startswith(Path(CLIP_SOURCE).stem), f"query_clip changed: {query_clip.name}; update CLIP_SOURCE"
    ids = [v["video_id"] for v in videos.values() if v["name"] == CLIP_SOURCE]
    assert len(ids) == 1, f"expected one {CLIP_SOURCE} in the collection, found {ids}"
    return query_clip, ids[0], CLIP_START


def _check_bars(track: Any, spans: list[tuple[float, float]], duration: float, what: str) -> None:
    """Each match bar of ``track`` starts and ends where its (start, end) seconds fall on 0..duration."""
    box = track.bounding_box()
    assert box and box["width"] > 100, f"{what} timeline not laid out: {box}"
    bars = track.get_by_test_id("match-bar")
    assert bars.count() == len(spans), f"{what}: {bars.count()} bars for {len(spans)} matches"
    for i, (start, end) in enumerate(spans):
        bar = bars.nth(i).bounding_box()
        assert bar is not None
        want_left = box["x"] + box["width"] * start / duration
        want_width = max(box["width"] * (min(end, duration) - start) / duration, MIN_BAR_PX)
        assert abs(bar["x"] - want_left) <= PX, (
            f"{what} bar {i}: left at {bar['x'] - box['x']:.1f} px of {box['width']:.0f}, expected "
            f"{want_left - box['x']:.1f} px ({start:.3f} s of {duration:.3f} s)")
        assert abs(bar["width"] - want_width) <= PX, (
            f"{what} bar {i}: {bar['width']:.1f} px wide, expected {want_width:.1f} px "
            f"({start:.3f}-{end:.3f} s of {duration:.3f} s)")


def _player_at(page: Any, start: float) -> dict[str, Any]:
    """Wait until the page's player shows a decoded frame within 1 s of ``start``; its time, src, width."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    read = """() => {
        const v = document.querySelector('[data-testid=player]');
        return {time: v.currentTime, src: v.src, width: v.videoWidth, ready: v.readyState, seeking: v.seeking,
                error: v.error ? v.error.code : null};
    }"""
    try:  # the state at the moment the condition held (the player goes on playing after it)
        state: dict[str, Any] = page.wait_for_function(f"""start => {{
            const s = ({read})();
            return (s.error !== null || (s.ready >= 2 && !s.seeking && Math.abs(s.time - start) < 1.0)) && s;
        }}""", arg=start, timeout=15_000).json_value()
    except PlaywrightTimeout:
        pytest.fail(f"the player did not reach {start:.3f} s in 15 s: {page.evaluate(read)}")
    assert state["error"] is None, f"the player failed with MediaError code {state['error']}: {state}"
    return state


def test_upload_clip_shows_results_timelines_player_and_videos(browser: Any, live_server: Any, query_clip: Path,
                                                                 artifacts: Path) -> None:
    t0 = time.perf_counter()
    videos = {v["video_id"]: v for v in _all_videos(live_server)}
    clip_path, source_id, source_start = _clip_facts(query_clip, videos)
    clip_duration = _clip_duration(clip_path)
    context, page, log = _open_page(browser, live_server.token)
    try:
        page.goto(live_server.url.rstrip("/") + "/")
        assert page.get_by_test_id("view-search").is_visible()

        # search: upload the clip through the file input; the page searches at once
        with page.expect_response(lambda r: urlsplit(r.url).path == "/search" and r.request.method == "POST",
                                  timeout=60_000) as answer_info:
            page.get_by_test_id("query-file").set_input_files(str(clip_path))
        response = answer_info.value
        assert response.status == 200, response.text()
        answer = response.json()
        status = page.get_by_test_id("search-status")
        page.wait_for_function("el => el.dataset.state !== 'busy'", arg=status.element_handle())
        assert status.get_attribute("data-state") == "done", status.inner_text()

        # rows: the API's results in the API's order, the clip's source first
        results = answer["results"]
        assert results and results[0]["video_id"] == source_id, (
            f"the API ranked {[r['video_id'] for r in results]}, expected {source_id} first")
        rows = page.get_by_test_id("result-row")
        assert [rows.nth(i).get_attribute("data-video-id") for i in range(rows.count())] == \
            [r["video_id"] for r in results]
        first = rows.first
        best = results[0]
        assert first.get_by_test_id("result-name").inner_text() == videos[source_id]["name"]
        assert first.get_by_test_id("result-score").inner_text() == f"{best['score']:.3f}"
        assert first.get_by_test_id("thumbnail").evaluate(_IMAGE_LOADED), "the first row's thumbnail did not load"

        # timelines: bars at the matches' times, on 0..video duration and 0..clip duration
        matches = best["matches"]
        assert matches, "the best result has no matched range"
        # the best match is where the clip was cut from and spans most of it (the page draws what the API
        # says; this checks the API's answer is worth drawing)
        assert abs(matches[0]["ref_start"] - source_start) <= 1.5, (matches[0], source_start)
        assert matches[0]["query_end"] - matches[0]["query_start"] >= clip_duration / 2, (matches[0], clip_duration)
        _check_bars(first.get_by_test_id("timeline-ref"), [(m["ref_start"], m["ref_end"]) for m in matches],
                    videos[source_id]["duration"], "reference")
        query_track = first.get_by_test_id("timeline-query")
        query_duration = float(query_track.get_attribute("data-duration"))
        assert abs(query_duration - clip_duration) <= 0.3, (query_duration, clip_duration)
        _check_bars(query_track, [(m["query_start"], m["query_end"]) for m in matches], query_duration, "query")
        page.screenshot(path=str(artifacts / "search-results.png"), full_page=True)

        # player: a click on the best match plays the reference from its start
        first.get_by_test_id("timeline-ref").get_by_test_id("match-bar").first.click()
        state = _player_at(page, matches[0]["ref_start"])
        assert abs(state["time"] - matches[0]["ref_start"]) < 1.0
        src = urlsplit(state["src"])
        assert src.path == f"/videos/{source_id}/media" and src.hostname in LOOPBACK_HOSTS, state["src"]
        if live_server.token:
            assert parse_qs(src.query).get("token") == [live_server.token], state["src"]
        assert state["width"] > 0, "the player decoded no frame"
        page.screenshot(path=str(artifacts / "player.png"))

        # videos page: every indexed video listed
        page.get_by_test_id("nav-videos").click()
        rows = page.get_by_test_id("video-row")
        page.wait_for_function(f"() => document.querySelectorAll('[data-testid=video-row]').length === {len(videos)}")
        listed = {rows.nth(i).get_attribute("data-video-id") for i in range(rows.count())}
        assert listed == set(videos)
        names = {rows.nth(i).get_by_test_id("video-name").inner_text() for i in range(rows.count())}
        assert names == {v["name"] for v in videos.values()}
        page.screenshot(path=str(artifacts / "videos.png"), full_page=True)

        assert log.page_errors == [], log.page_errors
        assert log.console_errors == [], log.console_errors
        assert log.foreign_requests() == [], log.foreign_requests()
    finally:
        context.close()
    elapsed = time.perf_counter() - t0
    print(f"browser test: {elapsed:.1f} s, load {os.getloadavg()}")


def _resource_errors_only(errors: list[str], status: int) -> bool:
    """Chromium logs every 4xx response as a console error; these are the only ones allowed here."""
    return all(f"status of {status}" in e for e in errors)


def test_image_query_and_an_api_error_in_the_page(browser: Any, live_server: Any, query_clip: Path,
                                                   artifacts: Path, tmp_path: Path) -> None:
    import av

    videos = {v["video_id"]: v for v in _all_videos(live_server)}
    _, source_id, _ = _clip_facts(query_clip, videos)
    source = videos[source_id]
    frame_path = tmp_path / "frame.png"  # a frame 1 s into the source, decoded here (not the server's thumbnail)
    with av.open(source["path"]) as container:
        frame = next(f for f in container.decode(video=0) if f.time is not None and f.time >= min(1.0, source["duration"] / 2))
        frame.to_image().save(frame_path)
    junk_path = tmp_path / "notes.mp4"  # not a video, whatever its name says
    junk_path.write_text("these are meeting notes, not a video\n" * 50, encoding="utf-8")

    context, page, log = _open_page(browser, live_server.token)
    try:
        page.goto(live_server.url.rstrip("/") + "/")
        is_search = lambda r: urlsplit(r.url).path == "/search" and r.request.method == "POST"  # noqa: E731
        status = page.get_by_test_id("search-status")

        # an image: results, and an image query has no query timeline
        with page.expect_response(is_search, timeout=60_000) as info:
            page.get_by_test_id("query-file").set_input_files(str(frame_path))
        assert info.value.status == 200, info.value.text()
        answer = info.value.json()
        page.wait_for_function("el => el.dataset.state !== 'busy'", arg=status.element_handle())
        assert status.get_attribute("data-state") == "done", status.inner_text()
        assert answer["results"] and answer["results"][0]["video_id"] == source_id, answer["results"][:2]
        first = page.get_by_test_id("result-row").first
        assert first.get_attribute("data-video-id") == source_id
        assert first.get_by_test_id("timeline-query").count() == 0
        assert first.get_by_test_id("timeline-query-image").is_visible()
        matches = answer["results"][0]["matches"]
        _check_bars(first.get_by_test_id("timeline-ref"), [(m["ref_start"], m["ref_end"]) for m in matches],
                    source["duration"], "reference (image query)")
        assert log.console_errors == [] and log.page_errors == [], (log.console_errors, log.page_errors)

        # a file that is no media: the API's JSON message in the page, the old rows gone, the form still there
        with page.expect_response(is_search, timeout=60_000) as info:
            page.get_by_test_id("query-file").set_input_files(str(junk_path))
        bad = info.value
        assert 400 <= bad.status < 500, (bad.status, bad.text())
        message = bad.json()["error"]["message"]
        page.wait_for_function("el => el.dataset.state !== 'busy'", arg=status.element_handle())
        assert status.get_attribute("data-state") == "error"
        error = page.get_by_test_id("error").first
        assert error.is_visible()
        assert error.get_by_test_id("error-message").inner_text() == message
        assert error.get_attribute("data-error-type") == bad.json()["error"]["type"]
        assert page.get_by_test_id("result-row").count() == 0
        assert page.get_by_test_id("search-form").is_visible()
        assert page.evaluate(_UNNAMED) == [], "controls a screen reader cannot name"
        page.screenshot(path=str(artifacts / "error.png"))

        assert log.page_errors == [], log.page_errors
        assert len(log.console_errors) == 1 and _resource_errors_only(log.console_errors, bad.status), log.console_errors
        assert log.foreign_requests() == [], log.foreign_requests()
    finally:
        context.close()


def test_token_is_asked_for_kept_and_sent(browser: Any, api_server: Any) -> None:
    """Against the server with a token (read-only here): the page asks, keeps and sends it."""
    live_server = api_server
    assert live_server.token, "api_server is expected to need a token"
    context, page, log = _open_page(browser, None)
    try:
        page.goto(live_server.url.rstrip("/") + "/")
        dialog = page.get_by_test_id("token-dialog")
        dialog.wait_for(state="visible")
        page.get_by_test_id("token-input").fill(live_server.token + "-wrong")
        page.get_by_test_id("token-save").click()
        page.wait_for_function("() => document.querySelector('#token-reason').textContent.includes('refused')")
        assert dialog.is_visible()
        page.get_by_test_id("token-input").fill(live_server.token)
        page.get_by_test_id("token-input").press("Enter")  # Enter saves, as the first button does
        total = _api(live_server, "/videos?offset=0&limit=1")["total"]
        page.wait_for_function(f"() => document.querySelectorAll('#ref-video option[value]:not([value=\"\"])').length === {total}")
        assert not dialog.is_visible()
        assert page.evaluate(f"localStorage.getItem({json.dumps(TOKEN_KEY)})") == live_server.token
        page.get_by_test_id("nav-videos").click()
        page.wait_for_function(f"() => document.querySelectorAll('[data-testid=video-row]').length === {total}")
        src = urlsplit(page.get_by_test_id("video-row").first.get_by_test_id("thumbnail").get_attribute("src"))
        assert parse_qs(src.query).get("token") == [live_server.token]
        assert page.get_by_test_id("video-row").first.get_by_test_id("thumbnail").evaluate(_IMAGE_LOADED), \
            "a thumbnail with ?token= did not load"
        assert log.page_errors == [], log.page_errors
        assert log.console_errors and _resource_errors_only(log.console_errors, 401), log.console_errors
        assert log.foreign_requests() == [], log.foreign_requests()
    finally:
        context.close()
