"""The dashboard in a real browser: headless Chromium, driven by selenium, on a real node.

The page must plot exactly what the readings API answers for the query it made,
show the node's ingest, exports and quarantined events, refresh itself, fit a
phone's width, ask for a key when reads are not public, and request nothing
from any host but the node.
"""

import json
import shutil
import time
import urllib.parse
import urllib.request

import pytest

from test_e2e import Node, admin_cli, free_port, no_node_left_running  # noqa: F401 - the fixture stops strays

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs headless Chromium and its driver (Debian: apt-get install chromium chromium-driver)")

# align: polls on whole seconds, so the page's whole-second `until` never splits one
SENSORS = """
[sensor:wave]
driver = simulated
interval = 1s
align = yes
waveform = sine
period = 40s
amplitude = 10
offset = 15
unit = celsius
field = temperature
"""
PLOT = "svg.plot[data-sensor='wave'][data-field='temperature']"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1100", "--no-first-run", "--disable-background-networking",
                     f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(30)
    try:
        driver.get("about:blank")  # away from the new-tab page, whose own requests are not the dashboard's
        driver.get_log("performance")
        yield driver
    finally:
        driver.quit()


def get_json(url, key=None, data=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_for(driver, condition, what, timeout=45):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def plotted(driver, minimum):
    """(the query the page made, its points as JSON, the vertices it drew) of the wave's plot, read in one
    go (a refresh cannot fall between them), once it has ``minimum`` points; else None."""
    return driver.execute_script("""
        const plot = document.querySelector(arguments[0]);
        if (!plot || JSON.parse(plot.dataset.points).length < arguments[1]) return null;
        const drawn = Array.from(plot.querySelectorAll("polyline"))
                           .map(line => line.getAttribute("points").trim().split(/\\s+/).length);
        return [plot.dataset.query, plot.dataset.points, drawn.reduce((a, b) => a + b, 0)];
    """, PLOT, minimum)


def check_plot_matches_api(node, driver, minimum, key=None):
    """The page's points are the readings API's answer to the page's own query, point for point."""
    query, points_json, drawn = wait_for(driver, lambda d: plotted(d, minimum), f"a plot of {minimum}+ points")
    points = json.loads(points_json)
    path, _, arguments = query.partition("?")
    assert path == "/api/v1/sensors/wave/readings"
    asked = dict(urllib.parse.parse_qsl(arguments))
    answer = get_json(f"http://127.0.0.1:{node.http}{query}", key)
    expected = [[r["time"], r["values"]["temperature"]] for r in answer["readings"]]
    assert points == expected
    assert drawn == len(points)  # one vertex a reading: no gaps at one reading a second
    return asked, points


def requests_made(driver, seen):
    """Every request the page sent since the last call, from Chromium's performance log, added to ``seen``."""
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            seen.append(dict(message["params"]["request"], documentURL=message["params"]["documentURL"]))
    return seen


def check_only_the_node_was_asked(node, seen):
    """Every request of the dashboard went to the node (or was a data: URL); any other is the browser's
    own (chrome://: the new-tab page it may still have been loading at the first navigation)."""
    origin = f"http://127.0.0.1:{node.http}/"
    pages = [request for request in seen if request["documentURL"].startswith(origin)]
    assert pages, "the performance log shows no request of the page"
    for request in pages:
        url = urllib.parse.urlsplit(request["url"])
        assert url.scheme == "data" or (url.scheme, url.netloc) == ("http", f"127.0.0.1:{node.http}"), request["url"]
    for request in seen:
        if request not in pages:
            assert request["url"].startswith(("chrome://", "data:")), request


def fits_the_width(driver):
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def text_of(driver, element_id):
    return driver.execute_script("return document.getElementById(arguments[0]).innerText", element_id)


@needs_chromium
def test_the_dashboard_plots_what_the_readings_api_answers(tmp_path, browser):
    dead_upstream = free_port()
    node = Node(tmp_path, SENSORS + f"[export:central]\ntarget_url = http://127.0.0.1:{dead_upstream}\n"
                                    "api_key = k\ninterval = 1s\n")
    admin_cli(node.config, "add-station", "501")
    box = admin_cli(node.config, "add-user", "box", "--role", "station", "--station", "501").strip().splitlines()[-1]
    node.start()
    batch = {"events": [{"type": "WTR", "time": time.time() - 60, "data": {"t": 11.5}},
                        {"type": "WTR", "time": 946684800, "data": {"t": 99}}]}  # 2000: before min_event_time
    outcome = get_json(f"http://127.0.0.1:{node.http}/api/v1/stations/501/events", box, json.dumps(batch).encode())
    assert outcome == {"accepted": 1, "duplicates": 0, "quarantined": 1}
    deadline = time.monotonic() + 30  # a few readings first, so the first drawing has a line to compare
    while len(get_json(f"http://127.0.0.1:{node.http}/api/v1/sensors/wave/readings")["readings"]) < 5:
        assert time.monotonic() < deadline, "the simulated sensor gave no readings"
        time.sleep(0.3)

    seen = []
    browser.get(f"http://127.0.0.1:{node.http}/?window=15m")
    asked, first = check_plot_matches_api(node, browser, 4)
    assert float(asked["until"]) - float(asked["since"]) == 900 and "step" not in asked  # 15 min, raw readings
    wait_for(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-state") == "ready", "ready")
    version = get_json(f"http://127.0.0.1:{node.http}/version")
    assert text_of(browser, "node-name") == version["node"] and text_of(browser, "node-id") == version["node_id"]
    assert version["version"] in text_of(browser, "node-version")
    card = browser.find_element("css selector", "section.sensor[data-sensor='wave']")
    value = card.find_element("css selector", ".field[data-field='temperature'] .value").text
    assert card.find_element("css selector", ".field[data-field='temperature'] .unit").text == "celsius"
    assert 5 <= float(value) <= 25  # offset 15, amplitude 10
    assert "native accepted" in text_of(browser, "ingest") and "0 B in 0 batches" in text_of(browser, "spool")
    exports = text_of(browser, "exports")
    assert "central" in exports and f"127.0.0.1:{dead_upstream}" in exports
    quarantined = wait_for(browser, lambda d: "501" in text_of(d, "quarantine") and text_of(d, "quarantine"),
                           "the quarantined event listed")
    assert "WTR" in quarantined and "2000-01-01" in quarantined
    links = {a.get_attribute("id"): a.get_attribute("href") for a in browser.find_elements("css selector", "nav a")}
    assert links == {"docs-link": f"http://127.0.0.1:{node.http}/api/docs",
                     "metrics-link": f"http://127.0.0.1:{node.http}/metrics"}

    # It refreshes itself: a later drawing has newer readings, and again exactly the API's.
    refreshes = int(browser.find_element("tag name", "body").get_attribute("data-refreshes"))
    wait_for(browser, lambda d: int(d.find_element("tag name", "body").get_attribute("data-refreshes")) > refreshes,
             "a refresh", timeout=30)
    _, later = check_plot_matches_api(node, browser, len(first) + 1)
    assert later[-1][0] > first[-1][0]
    assert "/s" in text_of(browser, "stored") and "…" not in text_of(browser, "ingest")  # rates after two polls
    browser.save_screenshot(str(tmp_path / "dashboard.png"))

    browser.set_window_size(390, 844)  # a phone
    wait_for(browser, fits_the_width, "the page within a phone's width", timeout=10)
    browser.save_screenshot(str(tmp_path / "dashboard-phone.png"))

    check_only_the_node_was_asked(node, requests_made(browser, seen))
    assert any("/readings?" in request["url"] for request in seen)
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not problems, problems  # no script error, no request the page's CSP refused
    assert node.stop() == 0


@needs_chromium
def test_without_public_reads_the_page_asks_for_a_key_and_keeps_it_for_the_session(tmp_path, browser):
    node = Node(tmp_path, SENSORS + "[web]\npublic_read = false\n")
    key = admin_cli(node.config, "add-user", "viewer", "--role", "reader").strip().splitlines()[-1]
    node.start()
    seen = []
    body = lambda d: d.find_element("tag name", "body")  # noqa: E731
    browser.get(f"http://127.0.0.1:{node.http}/?window=15m")
    wait_for(browser, lambda d: body(d).get_attribute("data-state") == "key", "the key form")
    assert browser.find_element("id", "key-form").is_displayed()
    assert not browser.find_elements("css selector", "section.sensor")
    node_name = get_json(f"http://127.0.0.1:{node.http}/version")["node"]
    wait_for(browser, lambda d: text_of(d, "node-name") == node_name, "the node's name (from /version, open)")
    browser.save_screenshot(str(tmp_path / "dashboard-key.png"))

    field = browser.find_element("id", "key-input")
    field.send_keys("not-a-key")
    field.submit()
    wait_for(browser, lambda d: "refused" in text_of(d, "key-message"), "the wrong key refused")
    browser.find_element("id", "key-input").send_keys(key)
    browser.find_element("id", "key-input").submit()
    check_plot_matches_api(node, browser, 2, key)
    storage = browser.execute_script("return [sessionStorage.getItem('stationd.apiKey'), localStorage.length]")
    assert storage == [key, 0]  # the tab's session only

    browser.refresh()  # the same tab: the key is still there, nothing asked
    check_plot_matches_api(node, browser, 2, key)
    assert not browser.find_element("id", "key-form").is_displayed()
    browser.find_element("id", "forget-key").click()
    wait_for(browser, lambda d: body(d).get_attribute("data-state") == "key", "the key form again")
    assert browser.execute_script("return sessionStorage.length") == 0

    requests_made(browser, seen)
    check_only_the_node_was_asked(node, seen)
    authorized = [request for request in seen if "/api/v1/" in request["url"]
                  and {k.lower(): v for k, v in request["headers"].items()}.get("authorization") == f"Bearer {key}"]
    assert authorized and all(key not in request["url"] for request in seen)
    assert node.stop() == 0
