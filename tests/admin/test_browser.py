"""The seed's user story in a real browser: a staff user presses an admin button, the daemon works.

Headless Chromium drives the demo shop's admin served by a real ``runserver``,
which calls a real ``runsocketservice`` over its Unix socket; both share one
migrated SQLite database, which the test reads to see what the daemon wrote.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.harness.browser import DevServer, chromium
from tests.harness.daemon import REPO, Daemon, manage

pytestmark = pytest.mark.browser

DASHBOARD_SCREENSHOT = REPO / "docs" / "dashboard.png"
# The README's picture, rewritten only when asked (it shows timestamps, so every run differs).
SCREENSHOT = REPO / "docs" / "admin-button.png"
WRITE_SCREENSHOTS = os.environ.get("SOCKETSVC_WRITE_SCREENSHOTS") == "1"
PASSWORD = "browser-test-password"


def create_superuser(database_url: str) -> None:
    done = manage(
        "createsuperuser",
        "--noinput",
        *("--username", "admin", "--email", "admin@example.com"),
        env={"DATABASE_URL": database_url, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
    )
    assert done.returncode == 0, done.stderr


class ShopDatabase:
    """Read the shop's tables straight from the SQLite file the daemon writes."""

    def __init__(self, database_url: str) -> None:
        self.path = database_url.removeprefix("sqlite:///")

    def _query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.path) as db:
            return db.execute(sql, args).fetchall()

    def pk(self, sku: str) -> int:
        return self._query("SELECT id FROM shop_product WHERE sku = ?", sku)[0][0]

    def stock(self, sku: str) -> int:
        return self._query("SELECT stock FROM shop_product WHERE sku = ?", sku)[0][0]

    def movements(self, sku: str, reason: str) -> list[int]:
        return [
            change
            for (change,) in self._query(
                "SELECT change FROM shop_stockmovement m JOIN shop_product p ON p.id = m.product_id"
                " WHERE p.sku = ? AND m.reason = ? ORDER BY m.id",
                sku,
                reason,
            )
        ]


@dataclass
class Shop:
    database_url: str
    db: ShopDatabase
    daemon: Daemon
    server: DevServer


@pytest.fixture
def shop(sqlite_url, start_daemon, short_tmp):
    """A migrated shop database with an admin login, its daemon, and runserver in front."""
    create_superuser(sqlite_url)
    # The suite's schedule, declared alike in the daemon and the web server (same code).
    periodic = {"TEST_PERIODIC": json.dumps({"every": 2})}
    daemon = start_daemon(
        sqlite_url,
        env={"SOCKETSVC_VAR_DIR": str(short_tmp), **periodic},
        TASK_WORKERS=2,
        SCHEDULES=["test.tick"],
        ACTIVITY=True,  # the dashboard's figures, as in production
    )
    server = DevServer(
        {"DATABASE_URL": sqlite_url, "SOCKETSVC_SOCKET": daemon.socket, **periodic},
        short_tmp / "runserver.log",
    ).start()
    yield Shop(sqlite_url, ShopDatabase(sqlite_url), daemon, server)
    server.stop()


def wait_for(driver, css: str, timeout: float = 20):
    return WebDriverWait(driver, timeout).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def message(driver, level: str) -> str:
    return wait_for(driver, f"ul.messagelist li.{level}").text


def click_and_load(driver, element) -> None:
    """Click ``element``, which submits a form or follows a link; wait for its page to go.

    The next page is then the one read: the old page's message (same selector) cannot be
    found first and go stale under the reader as the new page loads.
    """
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20).until(EC.staleness_of(page))


def response_status(driver) -> int:
    """Return the HTTP status of the document now shown (after any redirect)."""
    return driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].responseStatus"
    )


def log_in(driver, server: DevServer, next_path: str) -> None:
    driver.get(f"{server.url}/admin/login/?next={next_path}")
    driver.find_element(By.NAME, "username").send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "input[type=submit]"))


def test_admin_button_and_action_reach_the_daemon_in_a_real_browser(shop, start_daemon, short_tmp):
    """Log in, press "Restock now", see the daemon's change; stop it, press again; run an action."""
    daemon, server, db = shop.daemon, shop.server, shop.db
    mug = db.pk("MUG-01")
    change_url = f"{server.url}/admin/shop/product/{mug}/change/"

    with chromium() as driver:
        log_in(driver, server, f"/admin/shop/product/{mug}/change/")
        click_and_load(driver, wait_for(driver, 'button[data-socketsvc-method="shop.restock"]'))

        assert message(driver, "success") == "Restock now: sku MUG-01, added 24, stock 27"
        assert driver.current_url == change_url
        assert response_status(driver) == 200
        assert driver.find_element(By.CSS_SELECTOR, ".field-stock .readonly").text == "27"
        newest = driver.find_element(By.CSS_SELECTOR, "#movements-group tbody tr")
        assert "manual restock" in newest.text
        assert "24" in newest.text
        assert db.stock("MUG-01") == 27
        assert db.movements("MUG-01", "manual restock") == [24]
        shot = SCREENSHOT if WRITE_SCREENSHOTS else short_tmp / SCREENSHOT.name
        assert driver.save_screenshot(str(shot))

        assert daemon.stop() == 0
        click_and_load(
            driver,
            driver.find_element(By.CSS_SELECTOR, 'button[data-socketsvc-method="shop.restock"]'),
        )
        error = message(driver, "error")
        assert error.startswith("Restock now: the background service is not running.")
        assert driver.current_url == change_url
        assert response_status(driver) == 200
        assert "Traceback" not in driver.page_source
        assert driver.find_element(By.CSS_SELECTOR, ".field-stock .readonly").text == "27"
        assert db.stock("MUG-01") == 27

        start_daemon(shop.database_url, socket_path=daemon.socket)
        driver.get(f"{server.url}/admin/shop/product/")
        for sku in ("MUG-01", "PEN-03", "LAMP-05"):
            row = driver.find_element(By.XPATH, f'//tr[.//a[text()="{sku}"]]')
            row.find_element(By.CSS_SELECTOR, "input.action-select").click()
        menu = Select(driver.find_element(By.NAME, "action"))
        option = driver.find_element(
            By.CSS_SELECTOR, 'option[data-socketsvc-method="shop.restock_products"]'
        )
        menu.select_by_value(option.get_attribute("value"))
        click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "button[name=index]"))

        assert message(driver, "success") == (
            "Restock selected products: Restocked 3 product(s), 40 unit(s) in all: "
            "LAMP-05 +6, MUG-01 +24, PEN-03 +10"
        )
        assert response_status(driver) == 200
        stock_cells = {
            row.find_element(By.CSS_SELECTOR, ".field-sku").text: row.find_element(
                By.CSS_SELECTOR, ".field-stock"
            ).text
            for row in driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        }
        assert stock_cells == {
            "LAMP-05": "8",
            "MUG-01": "51",
            "NB-04": "12",
            "PEN-03": "10",
            "TEA-02": "40",
        }
    assert {sku: db.stock(sku) for sku in ("LAMP-05", "MUG-01", "PEN-03")} == {
        "LAMP-05": 8,
        "MUG-01": 51,
        "PEN-03": 10,
    }


def bar_width(driver) -> float:
    """Return the progress bar's fill, in percent."""
    fill = driver.find_element(By.CSS_SELECTOR, ".socketsvc-progress-fill")
    return (
        float(fill.value_of_css_property("width").removesuffix("px"))
        / float(
            driver.find_element(By.CSS_SELECTOR, ".socketsvc-progress-track")
            .value_of_css_property("width")
            .removesuffix("px")
        )
        * 100
    )


TASK_SCREENSHOT = REPO / "docs" / "task-progress.png"


def test_a_task_action_shows_a_progress_bar_that_moves_without_a_reload(shop, short_tmp):
    """Run "Count stock" on every product: the message links the task's page, whose bar moves
    on its own while the task runs, then shows Successful and the task's result."""
    server = shop.server
    with chromium() as driver:
        log_in(driver, server, "/admin/shop/product/")
        wait_for(driver, "#action-toggle").click()  # every product
        option = driver.find_element(
            By.CSS_SELECTOR, 'option[data-socketsvc-task="project.shop.tasks.stock_count"]'
        )
        Select(driver.find_element(By.NAME, "action")).select_by_value(
            option.get_attribute("value")
        )
        click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "button[name=index]"))
        assert message(driver, "success").startswith(
            "Count stock of selected products (a report in the background): queued as task "
        )
        click_and_load(driver, wait_for(driver, "ul.messagelist a[data-socketsvc-result]"))
        wait_for(driver, ".socketsvc-progress")
        driver.execute_script("window.socketsvcSamePage = true;")
        widths = []

        def moved_on(driver) -> bool:
            widths.append(round(bar_width(driver)))
            return 0 < widths[-1] < 100

        WebDriverWait(driver, 20, poll_frequency=0.1).until(moved_on)
        shot = TASK_SCREENSHOT if WRITE_SCREENSHOTS else short_tmp / TASK_SCREENSHOT.name
        assert driver.save_screenshot(str(shot))
        status = driver.find_element(
            By.CSS_SELECTOR, '.field-status_badge [data-socketsvc-field="status"]'
        )
        WebDriverWait(driver, 30, poll_frequency=0.1).until(lambda d: status.text == "Successful")
        WebDriverWait(driver, 5, poll_frequency=0.1).until(lambda d: round(bar_width(d)) == 100)
        assert driver.execute_script("return window.socketsvcSamePage === true;")  # no reload
        assert (
            driver.find_element(
                By.CSS_SELECTOR, '.field-progress_bar [data-socketsvc-field="progress"]'
            ).text
            == "5 / 5 — counted TEA-02"
        )
        assert widths == sorted(widths)
        driver.refresh()
        assert "Counted 5 products" in wait_for(driver, ".field-result").text


def select_action(driver, value: str) -> None:
    Select(driver.find_element(By.NAME, "action")).select_by_value(value)
    click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "button[name=index]"))


def test_a_schedule_is_paused_and_run_now_from_the_admin(shop):
    """The schedules page lists test.tick with its next and last run; "Pause" makes the daemon
    skip its slots; "Run now" queues a run at once, whose page shows it succeed."""
    server, daemon = shop.server, shop.daemon
    with chromium() as driver:
        log_in(driver, server, "/admin/socketsvc/schedulerecord/")

        def listed(driver) -> bool:
            driver.refresh()
            rows = driver.find_elements(By.XPATH, '//tr[.//a[text()="test.tick"]]')
            return bool(rows) and "SUCCESSFUL" in rows[0].text.upper()

        WebDriverWait(driver, 30, poll_frequency=0.5).until(listed)
        row = driver.find_element(By.XPATH, '//tr[.//a[text()="test.tick"]]')
        assert "every 2s" in row.text
        row.find_element(By.CSS_SELECTOR, "input.action-select").click()
        select_action(driver, "pause")
        assert message(driver, "success") == "Paused 1 schedule(s)."
        row = driver.find_element(By.XPATH, '//tr[.//a[text()="test.tick"]]')
        assert "paused" in row.find_element(By.CSS_SELECTOR, ".field-next_run").text
        WebDriverWait(driver, 20, poll_frequency=0.2).until(
            lambda d: any(
                e.get("event") == "periodic_slots_skipped" and e.get("reason") == "paused"
                for e in daemon.log_events()
            )
        )

        row.find_element(By.CSS_SELECTOR, "input.action-select").click()
        select_action(driver, "run_now")
        assert message(driver, "success").startswith("Queued now: test.tick (")
        click_and_load(driver, wait_for(driver, "ul.messagelist a"))
        status = wait_for(driver, '.field-status_badge [data-socketsvc-field="status"]')
        WebDriverWait(driver, 20, poll_frequency=0.2).until(lambda d: status.text == "Successful")
        assert "test.tick" in driver.page_source or "tick" in driver.title


# What each step's box shows, by step id, as the page has it now.
_STATES = """
return Array.from(document.querySelectorAll('g[data-step]')).map(function (g) {
    var state = (g.getAttribute('class').match(/socketsvc-node-(waiting|ready|running|successful|failed|cancelled)/) || [])[1];
    return [g.getAttribute('data-step'), state];
});
"""
WORKFLOW_SCREENSHOT = REPO / "docs" / "workflow-graph.png"


def start_stock_take(driver, server: DevServer) -> None:
    """Run the suppliers' "Stock-take" action on every supplier; open the workflow's page."""
    log_in(driver, server, "/admin/shop/supplier/")
    wait_for(driver, "#action-toggle").click()
    select_action(driver, "stock_take")
    assert message(driver, "success").startswith("Stock-take started: watch its workflow")
    click_and_load(driver, wait_for(driver, "ul.messagelist a"))
    wait_for(driver, "svg.socketsvc-graph")


def test_a_workflow_started_from_the_admin_is_drawn_changing_colour_step_by_step(shop, short_tmp):
    """The demo's stock-take (4 suppliers counted in parallel, then merged, then filed): its
    graph recolours each box as the daemon moves on, without a reload; the merge turns
    green only after every count did; a box opens its step's page, which links back."""
    with chromium() as driver:
        start_stock_take(driver, shop.server)
        driver.execute_script("window.socketsvcSamePage = true;")
        order = [step for step, _ in driver.execute_script(_STATES)]
        counts, merge, filed = order[:-2], order[-2], order[-1]
        assert len(counts) == 4
        seen: list[dict[str, str]] = []
        shot = WORKFLOW_SCREENSHOT if WRITE_SCREENSHOTS else short_tmp / WORKFLOW_SCREENSHOT.name

        def finished(driver) -> bool:
            seen.append(dict(driver.execute_script(_STATES)))
            states = set(seen[-1].values())
            if not shot.exists() and {"successful", "running"} <= states:
                assert driver.save_screenshot(str(shot))  # the picture in the docs: mid-way
            return states == {"successful"}

        WebDriverWait(driver, 60, poll_frequency=0.1).until(finished)
        assert driver.execute_script("return window.socketsvcSamePage === true;")  # no reload
        assert seen[0][merge] == "waiting" and seen[0][filed] == "waiting"
        assert any(snapshot[c] == "running" for snapshot in seen for c in counts)
        for snapshot in seen:
            if snapshot[merge] != "waiting":
                assert all(snapshot[c] == "successful" for c in counts), snapshot
            if snapshot[filed] != "waiting":
                assert snapshot[merge] == "successful", snapshot
        distinct = [s for n, s in enumerate(seen) if n == 0 or s != seen[n - 1]]
        assert len(distinct) >= 4, distinct  # it changed step by step, not all at once
        status = wait_for(driver, '[data-socketsvc-field="workflow-status"]')
        WebDriverWait(driver, 10, poll_frequency=0.1).until(lambda d: status.text == "Successful")
        box = driver.find_element(By.CSS_SELECTOR, f'g[data-step="{merge}"]')
        click_and_load(driver, box)
        assert "merge_stock_counts" in driver.title
        back = wait_for(driver, ".field-workflow_link a")
        click_and_load(driver, back)
        wait_for(driver, f'g[data-step="{merge}"]')


def test_a_workflow_cancelled_from_the_admin_never_starts_another_step(shop):
    """Cancel while the counts run: the workflow is Cancelled, the running counts stop, and
    the merge and the filing never start (read from the daemon's database)."""
    with chromium() as driver:
        start_stock_take(driver, shop.server)

        def counting(driver) -> bool:
            return "running" in dict(driver.execute_script(_STATES)).values()

        WebDriverWait(driver, 30, poll_frequency=0.1).until(counting)
        order = [step for step, _ in driver.execute_script(_STATES)]
        click_and_load(
            driver, driver.find_element(By.CSS_SELECTOR, "[data-socketsvc-cancel-workflow]")
        )
        status = wait_for(driver, '[data-socketsvc-field="workflow-status"]')
        assert status.text == "Cancelled"
        rows = shop.db._query
        WebDriverWait(driver, 30, poll_frequency=0.2).until(
            lambda d: (
                not rows(
                    "SELECT id FROM socketsvc_task WHERE status IN ('READY', 'RUNNING', 'WAITING')"
                )
            )
        )
        started = dict(rows("SELECT id, started_at FROM socketsvc_task"))
        assert started[order[-2]] is None and started[order[-1]] is None
        states = dict(rows("SELECT id, status FROM socketsvc_task"))
        assert all(states[step] in ("FAILED", "SUCCESSFUL") for step in order[:-2])
        assert states[order[-2]] == states[order[-1]] == "FAILED"
        workflow = rows("SELECT status FROM socketsvc_workflow")
        assert workflow == [("CANCELLED",)]


def _colour(driver, css: str, prop: str) -> str:
    return driver.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]];", css, prop
    )


def _started_total(driver) -> int:
    """The page's count of runs started, read in one script: the refresh swaps the figures
    in place, so an element found first may be gone when its text is read."""
    wait_for(driver, '[data-socketsvc-field="started-total"]')
    text = driver.execute_script(
        "const shown = document.querySelector('[data-socketsvc-field=\"started-total\"]');"
        "return shown ? shown.textContent : '-1';"
    )
    return int(text)


def test_the_dashboard_draws_its_charts_updates_itself_and_follows_dark_mode(shop, short_tmp):
    """The socketsvc app index links the dashboard; its six charts are inline SVG; after
    tasks run, the figures change without a reload; in dark mode the charts are drawn in
    the admin's dark colours; the page asked no other host for anything."""
    server = shop.server
    with chromium() as driver:
        log_in(driver, server, "/admin/socketsvc/")
        click_and_load(driver, driver.find_element(By.LINK_TEXT, "Dashboard"))
        charts = driver.find_elements(By.CSS_SELECTOR, "figure.socketsvc-chart svg")
        assert len(charts) == 6
        assert driver.find_element(By.CSS_SELECTOR, "[data-socketsvc-process]")  # the processes
        driver.execute_script("window.socketsvcSamePage = true;")
        before = _started_total(driver)
        shop.daemon.call("testapp.enqueue_adds", 5)
        # Written by the daemon within a flush, then fetched by the page within a refresh.
        WebDriverWait(driver, 45, poll_frequency=0.2).until(
            lambda d: _started_total(d) >= before + 5
        )
        assert driver.execute_script("return window.socketsvcSamePage === true;")  # no reload
        lines = driver.find_elements(By.CSS_SELECTOR, "figure.socketsvc-chart polyline")
        assert lines, "the charts draw lines once tasks ran"
        light = _colour(driver, ".socketsvc-chart", "backgroundColor")
        axis_light = _colour(driver, ".socketsvc-axis", "fill")
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        driver.refresh()
        wait_for(driver, "figure.socketsvc-chart svg")
        dark = _colour(driver, ".socketsvc-chart", "backgroundColor")
        assert dark != light
        assert _colour(driver, ".socketsvc-axis", "fill") != axis_light
        brightness = sum(int(n) for n in dark[dark.index("(") + 1 : dark.index(")")].split(",")[:3])
        assert brightness < 3 * 80, dark  # a dark background
        shot = DASHBOARD_SCREENSHOT if WRITE_SCREENSHOTS else short_tmp / "dashboard.png"
        assert driver.save_screenshot(str(shot))
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);"
        )
        assert resources, "the page loaded its CSS and script"
        assert all(url.startswith(server.url) for url in resources), resources
