"""The dashboard's pages in a real headless Chromium (Debian's, driven through its
ChromeDriver by Selenium) against a running ensemble and a real `miyabi web`: the
ensemble page shows the agents, what an agent prints appears on its page, the send
box and Approve reach the pane, the task board acts. A screenshot of each page is
saved under the pytest temp dir (``screenshots/``)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_delivery import send, transcript
from integration.webkit import Web, browse, serve, stop
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from miyabi.tmux.runner import Tmux
from miyabi.work.model import TaskState
from miyabi.work.store import Store
from miyabi.work.stories import StoryState


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert browser and driver, (
        "Chromium and ChromeDriver are missing; scripts/test installs them (apt-get install chromium chromium-driver)"
    )
    return browser, driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver = chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    # This machine's network is closed: without the background-networking flags Chromium
    # keeps trying to reach Google's hosts.
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    b.set_page_load_timeout(60)
    try:
        yield b
    finally:
        b.quit()


def login(b: WebDriver, web: Web, path: str = "/") -> None:
    b.get(f"{web.base}{path}?token={web.token}" if "?" not in path else f"{web.base}{path}&token={web.token}")
    wait_for(lambda: b.execute_script("return document.readyState") == "complete", what="the page loaded")


def text_of(b: WebDriver, css: str) -> str:
    """The text of the first element ``css`` selects ("" while there is none)."""
    try:
        found = b.find_elements(By.CSS_SELECTOR, css)
        return str(found[0].text) if found else ""
    except StaleElementReferenceException:  # redrawn between the look and the read
        return ""


def click(b: WebDriver, by: str, selector: str, what: str) -> None:
    """Click the first element ``selector`` finds, once it is there; an element the page
    redrew between the look and the click (live rows, over SSE) is looked up again."""

    def clicked() -> bool:
        try:
            found = b.find_elements(by, selector)
            if found:
                found[0].click()
                return True
        except StaleElementReferenceException:
            pass
        return False

    wait_for(clicked, timeout=30, what=what)


def js(b: WebDriver, script: str, *args: Any) -> Any:
    return b.execute_script(script, *args)


def test_the_ensemble_page_shows_the_agents_of_the_running_ensemble(web: Web, browser: WebDriver, shots: Path) -> None:
    login(browser, web)
    names = wait_for(
        lambda: js(browser, "return [...document.querySelectorAll('.card')].map(c => c.dataset.agent)"),
        timeout=30,
        what="agent cards",
    )
    assert names == ["w1", "sh", "ask"]
    wait_for(
        lambda: js(
            browser, "return [...document.querySelectorAll('.card .state')].every(s => s.textContent === 'ready')"
        ),
        timeout=30,
        what="every card ready",
    )
    assert "controller running" in text_of(browser, "#main")
    browser.save_screenshot(str(shots / "ensemble.png"))


def test_what_an_agent_prints_appears_on_its_page(web: Web, browser: WebDriver, shots: Path) -> None:
    login(browser, web, "/agents/sh")
    wait_for(
        lambda: js(browser, "return Number(document.getElementById('screen').dataset.frames || 0)") >= 1,
        timeout=30,
        what="the first frame",
    )
    frames = js(browser, "return Number(document.getElementById('screen').dataset.frames)")
    # record when the words appear, in the page's own clock (the same machine's)
    js(
        browser,
        """window.seenAt = null; new MutationObserver(() => {
        if (window.seenAt === null && document.getElementById('screen').textContent.includes('seen in the browser'))
            window.seenAt = Date.now(); }).observe(document.getElementById('screen'),
            {childList: true, subtree: true, characterData: true});""",
    )
    pane = _pane(web, "sh")
    typed = time.time()
    Tmux(web.socket).run("send-keys", "-t", pane, "-l", "seen in the browser")
    seen = wait_for(lambda: js(browser, "return window.seenAt"), timeout=30, what="the words in the browser")
    assert (
        js(browser, "return Number(document.getElementById('screen').dataset.frames)") > frames
    )  # pushed, not reloaded
    latency = seen / 1000 - typed
    (shots / "pane-to-browser.txt").write_text(f"{latency * 1000:.1f} ms\n")
    print(f"pane → browser: {latency * 1000:.1f} ms")
    browser.save_screenshot(str(shots / "agent.png"))


def _pane(web: Web, name: str) -> str:
    import httpx

    with httpx.Client(base_url=web.base, headers={"Authorization": f"Bearer {web.token}"}) as c:
        return str(c.get(f"/api/v1/agents/{name}").json()["pane_id"])


def test_the_send_box_reaches_the_agent_once(web: Web, browser: WebDriver) -> None:
    login(browser, web, "/agents/w1")
    box = wait_for(lambda: browser.find_elements(By.ID, "send-text"), timeout=30, what="the send box")[0]
    box.send_keys("typed in the dashboard")
    browser.find_element(By.ID, "send").click()
    wait_for(lambda: transcript(web.home, "w1").count("typed in the dashboard") == 1, timeout=30, what="delivered")
    wait_for(lambda: "queued" in text_of(browser, "#toast"), what="the toast")
    assert browser.find_element(By.ID, "send-text").get_attribute("value") == ""


def test_approve_on_a_waiting_agent_reaches_the_pane(web: Web, browser: WebDriver, shots: Path) -> None:
    send(web.home, "ask", "run the tool please")
    login(browser, web, "/approvals")
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "tr[data-agent=ask] button.approve"),
        timeout=30,
        what="the Approve button",
    )
    assert "Allow running the tool?" in text_of(browser, "tr[data-agent=ask]")
    browser.save_screenshot(str(shots / "approvals.png"))
    click(browser, By.CSS_SELECTOR, "tr[data-agent=ask] button.approve", "the Approve button")
    wait_for(
        lambda: web.answers.exists() and web.answers.read_text().splitlines() == ["yes"],
        timeout=30,
        what="yes in the pane",
    )
    wait_for(lambda: "web:127.0.0.1" in text_of(browser, "#main"), timeout=30, what="the audit row")


def test_the_task_board_adds_filters_and_cancels(web: Web, browser: WebDriver, shots: Path) -> None:
    store = Store.of_home(web.home)
    store.add("labelled <b>bold</b>", "", ["docs"], "normal", [])
    login(browser, web, "/tasks")
    title = wait_for(lambda: browser.find_elements(By.NAME, "title"), timeout=30, what="the add form")[0]
    title.send_keys("added in the browser")
    browser.find_element(By.ID, "add-task").click()
    wait_for(
        lambda: sorted(t.title for t in store.query()) == ["added in the browser", "labelled <b>bold</b>"],
        what="the task stored",
    )
    wait_for(lambda: "added in the browser" in text_of(browser, "[data-column=queued]"), what="on the board")
    assert "labelled <b>bold</b>" in text_of(browser, "[data-column=queued]")  # as text, never markup
    browser.save_screenshot(str(shots / "tasks.png"))
    login(browser, web, "/tasks?label=docs")
    wait_for(lambda: "labelled" in text_of(browser, "[data-column=queued]"), what="filtered")
    assert "added in the browser" not in text_of(browser, "[data-column=queued]")
    login(browser, web, "/tasks/1")
    click(browser, By.ID, "cancel", "the cancel button")
    wait_for(lambda: store.get(1).state == "cancelled", what="cancelled")
    wait_for(lambda: browser.find_elements(By.ID, "retry"), timeout=30, what="the retry button")
    browser.save_screenshot(str(shots / "task.png"))
    login(browser, web, "/tasks")  # the cancelled task is with the finished ones, and says it was cancelled
    wait_for(lambda: "cancelled" in text_of(browser, "[data-column=finished]"), what="in the finished column")
    assert "labelled <b>bold</b>" in text_of(browser, "[data-column=finished]")


def test_no_page_shows_a_missing_value_as_null(web: Web, browser: WebDriver) -> None:
    """A task with no body, no agent and no pull request: its page, and the board as the
    view token sees it (no add form), once drawn."""
    Store.of_home(web.home).add("a task with little", "", [], "normal", [])
    for token, path, drawn in ((web.token, "/tasks/1", "#main table"), (web.view_token, "/tasks", "#main section")):
        browser.get(f"{web.base}{path}?token={token}")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, drawn), timeout=30, what=f"{path} drawn")  # noqa: B023
        wait_for(lambda: "a task with little" in text_of(browser, "#main"), what=f"the task on {path}")
        text = js(browser, "return document.body.innerText")
        assert "null" not in text and "undefined" not in text, (path, text)


def test_the_agent_inbox_fits_its_column_at_1400_px(web: Web, browser: WebDriver, shots: Path) -> None:
    from integration.test_delivery import send

    send(web.home, "ask", "please run the tool")  # it asks, and takes no message until answered
    import httpx

    with httpx.Client(base_url=web.base, headers={"Authorization": f"Bearer {web.token}"}) as c:
        wait_for(lambda: c.get("/api/v1/agents/ask").json()["state"] == "waiting-approval", timeout=30, what="waiting")
    send(web.home, "ask", "a message that waits in the inbox, long enough to wrap over several lines " * 3)
    browser.set_window_size(1400, 900)
    login(browser, web, "/agents/ask")
    assert js(browser, "return window.innerWidth") <= 1400
    wait_for(lambda: browser.find_elements(By.XPATH, "//button[text()='Drop']"), timeout=30, what="the Drop button")
    box = js(
        browser,
        """const b = [...document.querySelectorAll('button')].find((x) => x.textContent === 'Drop');
        const col = b.closest('.side').getBoundingClientRect(), r = b.getBoundingClientRect();
        return {left: r.left, right: r.right, colLeft: col.left, colRight: col.right, width: window.innerWidth,
                scroll: document.documentElement.scrollWidth};""",
    )
    browser.save_screenshot(str(shots / "agent-1400.png"))
    assert box["colLeft"] <= box["left"] and box["right"] <= box["colRight"] <= box["width"], box
    assert box["scroll"] <= box["width"], box  # nothing wider than the window


def test_events_and_inbox_pages(web: Web, browser: WebDriver, shots: Path) -> None:
    login(browser, web, "/events")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#feed tr"), timeout=30, what="past events")
    wait_for(
        lambda: "up" in browser.find_element(By.ID, "conn").get_attribute("class"),
        timeout=30,
        what="the live feed open",
    )
    mid = send(web.home, "sh", "an event for the feed")
    wait_for(lambda: mid in text_of(browser, "#feed"), timeout=30, what="the new event on the page")
    browser.save_screenshot(str(shots / "events.png"))
    login(browser, web, "/inbox")
    wait_for(
        lambda: (
            "every inbox is empty" in text_of(browser, "#main") or browser.find_elements(By.CSS_SELECTOR, "#main table")
        ),
        timeout=30,
        what="the inbox page",
    )
    browser.save_screenshot(str(shots / "inbox.png"))


def test_the_view_token_shows_no_buttons(web: Web, browser: WebDriver) -> None:
    browser.get(f"{web.base}/agents/w1?token={web.view_token}")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".info .state"), timeout=30, what="the agent page")
    assert browser.find_elements(By.ID, "send") == [] and browser.find_elements(By.ID, "restart") == []
    assert "read-only" in browser.find_element(By.TAG_NAME, "header").text


def test_the_kpi_page_draws_its_charts(web: Web, browser: WebDriver, shots: Path) -> None:
    send(web.home, "w1", "a delivery to chart")
    wait_for(lambda: "a delivery to chart" in transcript(web.home, "w1"), timeout=30, what="delivered")
    for since in ("24h", "7d"):
        login(browser, web, f"/kpis?since={since}")
        charts = wait_for(
            lambda: js(
                browser,
                """const imgs = [...document.querySelectorAll('img[data-chart]')];
            return imgs.length === 6 && imgs.every(i => i.complete && i.naturalWidth > 0)
                && imgs.map(i => i.dataset.chart);""",
            ),
            timeout=60,
            what="six charts drawn",
        )
        assert charts == ["availability", "restarts", "mttr", "delivery", "tasks", "utilization"]
        assert "w1" in text_of(browser, "#main") and "availability" in text_of(browser, "#main")
        browser.save_screenshot(str(shots / f"kpis-{since}.png"))


def test_the_agent_page_searches_the_pane_log(web: Web, browser: WebDriver) -> None:
    send(web.home, "sh", "a line to find later")
    wait_for(
        lambda: "a line to find later" in (web.home / "logs" / "sh.log").read_text(errors="replace"),
        timeout=30,
        what="the line in the pane log",
    )
    login(browser, web, "/agents/sh")
    box = wait_for(lambda: browser.find_elements(By.NAME, "grep"), timeout=30, what="the search box")[0]
    box.send_keys("find later")
    browser.find_element(By.CSS_SELECTOR, "#log-search button").click()
    wait_for(lambda: "a line to find later" in text_of(browser, "#found"), timeout=30, what="the found line")


FAILING = [
    ("ok", "shell", "cat"),
    {
        "name": "boom",
        "profile": "shell",
        "command": """sh -c 'echo "boom: the disk <is> full"; exit 3'""",
        "watchdog": {"max_restarts": 1, "min_uptime": 10},
    },
]


def test_a_failed_agent_says_why_and_how_to_bring_it_back(
    cli: Cli, home: Path, socket: str, tmp_path: Path, browser: WebDriver, shots: Path
) -> None:
    """Its page shows the last lines it printed (its screen is blank once dead) and one
    line: failed, why, and `miyabi restart NAME`; a session named miyabi is not named twice."""
    lay = write_layout(tmp_path / "failing.yaml", FAILING, session="miyabi")
    web = serve(cli, home, socket, lay, tmp_path / "answers.txt")
    try:
        with web.client() as c:
            wait_for(lambda: c.get("/api/v1/agents/boom").json()["state"] == "failed", timeout=60, what="boom failed")
        with browse(web) as c:
            html = c.get("/agents/boom").text
            assert "boom: the disk &lt;is&gt; full" in html, html
            assert "boom failed: the watchdog gave up restarting it" in html and "`miyabi restart boom`" in html
            home_page = c.get("/").text
        assert "<title>Ensemble · miyabi</title>" in home_page and "miyabi miyabi" not in home_page
        assert "bring it back with `miyabi restart boom`" in home_page  # on its card too
        login(browser, web, "/agents/boom")
        wait_for(lambda: "the disk <is> full" in text_of(browser, "#screen"), timeout=30, what="its last lines")
        assert "miyabi restart boom" in text_of(browser, "#info")
        assert "miyabi miyabi" not in browser.find_element(By.TAG_NAME, "header").text
        assert browser.title == "boom · miyabi"
        browser.save_screenshot(str(shots / "failed-agent.png"))
    finally:
        stop(web.proc)


def test_the_story_view_follows_a_story_live(web: Web, browser: WebDriver, shots: Path) -> None:
    from miyabi.work import stories

    store = Store.of_home(web.home)
    # no manager, no coder (this layout has no roles:): nothing routes them, and the keeper leaves the story be
    story, _ = stories.create(store, "A <i>tiny</i> site", "", home_root=web.home)
    kids = [store.add(f"page {i}").id for i in (1, 2)]
    stories.attach(store, story.id, kids)
    login(browser, web, "/stories")
    wait_for(lambda: "planning" in text_of(browser, "#stories"), timeout=30, what="the story listed")
    assert "A <i>tiny</i> site" in text_of(browser, "#stories") and "0 / 2" in text_of(browser, "#stories")
    browser.save_screenshot(str(shots / "stories.png"))
    click(browser, By.CSS_SELECTOR, f"[data-story='{story.id}'] a", "the story's link")
    wait_for(lambda: browser.find_elements(By.ID, "story-tasks"), timeout=30, what="the story's page")
    assert "not deployed yet" in text_of(browser, "#deploy")
    # the story moves on while the page is open: its page follows without a reload
    for tid in kids:
        store.set_state(tid, TaskState.ASSIGNED, "routed", agent="w1")
        store.set_state(tid, TaskState.VERIFYING, "says done")
        store.set_state(tid, TaskState.VERIFIED, "verified and merged")
    stories.move(store, story.id, StoryState.BUILDING, "planned into 2 task(s)")
    wait_for(lambda: "2 of 2 landed" in text_of(browser, "#story"), timeout=30, what="the tasks landed, live")
    rows = js(
        browser, "return [...document.querySelectorAll('#story-tasks tr[data-task] .state')].map(s => s.textContent)"
    )
    assert rows == ["verified", "verified"]
    assert "building" in text_of(browser, "#story h2")
    browser.save_screenshot(str(shots / "story.png"))
    text = js(browser, "return document.body.innerText")
    assert "null" not in text and "undefined" not in text


def test_a_waiting_merge_shows_its_diff_and_approve_lands_it(
    cli: Cli, home: Path, socket: str, tmp_path: Path, browser: WebDriver, shots: Path
) -> None:
    from integration.test_pipeline import task_state
    from integration.test_selfedit import FIX, approving, merge_waits

    repo, _, lay = approving(tmp_path, "merges", FIX)
    w = serve(cli, home, socket, lay, tmp_path / "answers.txt")
    try:
        merge_waits(cli, home)
        login(browser, w, "/approvals")
        button = "section.merge[data-task='1'] button.approve"
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, button), timeout=30, what="the merge's Approve button")
        assert "+fixed" in text_of(browser, "section.merge[data-task='1'] pre.diff")
        assert "sh check.sh" in text_of(browser, "section.merge[data-task='1'] ul.results")
        browser.save_screenshot(str(shots / "approvals-merge.png"))
        assert (repo / "feature.txt").read_text() == "broken\n"
        click(browser, By.CSS_SELECTOR, button, "the merge's Approve button")
        wait_for(lambda: task_state(home, 1) == "done", timeout=60, what="the approved merge landed")
        assert (repo / "feature.txt").read_text() == "fixed\n"
        wait_for(lambda: "no merge waits" in text_of(browser, "#merges"), timeout=30, what="no merge listed")
    finally:
        stop(w.proc)
