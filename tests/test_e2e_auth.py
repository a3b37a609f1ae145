"""Password guessing against the real daemon (issue 20, item 4): 200 concurrent wrong HiSPARC
passwords for station 501 from one address while station 502 makes its first upload, with its
right password, from another.  502 is answered while the guesses are still in flight, the
guesses past the limit get the rate-limit answer (400 with Retry-After, the code stations retry
on), and the access log holds far fewer lines than there were guesses.

The long form, with figures (before and after): bench/password_flood.py."""

import hashlib
import http.client
import threading
import time
import urllib.parse

import pytest

from stationd import config as configuration

from test_e2e import Node, admin_cli

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out

GUESSER, STATION = "127.0.0.2", "127.0.0.3"  # (the whole of 127/8 reaches a listener on 127.0.0.1)


def post(port, source, station, password, timeout=120):
    text = "[]"
    body = urllib.parse.urlencode({"station_id": station, "password": password, "data": text, "format": "json",
                                   "checksum": hashlib.md5(text.encode()).hexdigest()}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("POST", "/upload", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        return response.read().decode(), response.getheader("Retry-After")
    finally:
        conn.close()


def flood_config(new=True):
    """The node's [web] settings for the attack: without a cap on connections (item 3's), so the
    guesses all reach the password checks; ``new``: with this fix's settings made visible."""
    web = {}
    if "max_connections_per_client" in configuration.SCHEMA["web"]:
        web["max_connections_per_client"] = "0"
    if new:  # a long window, so that a rate-limited answer (Retry-After > 10 s) is told from a full queue (10 s)
        web.update(auth_failures="20", auth_window="300s", password_queue="50")
    return "[web]\n" + "".join(f"{key} = {value}\n" for key, value in web.items())


def flood(node, guesses=200):
    """Run the attack on a started ``node`` with stations 501 and 502 (password "right"); the figures."""
    answers, lock = [], threading.Lock()

    def guess(i):
        answer = post(node.http, GUESSER, "501", f"guess-{i}")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(guesses)]
    for thread in threads:
        thread.start()
    while not answers:  # the node is answering guesses: the rest are queued or on their way
        time.sleep(0.01)
    started = time.monotonic()
    station_answer = post(node.http, STATION, "502", "right")
    station_wait = time.monotonic() - started
    with lock:
        in_flight = guesses - len(answers)
    for thread in threads:
        thread.join()
    later = [post(node.http, GUESSER, "501", f"later-{i}") for i in range(5)]
    return {"station_answer": station_answer, "station_wait_s": round(station_wait, 3), "in_flight": in_flight,
            "answers": answers, "later": later}


def access_lines(node):
    return [line for line in node.log.read_text().splitlines() if '"POST /upload"' in line]


def test_password_guesses_for_one_station_do_not_delay_another(tmp_path):
    node = Node(tmp_path, flood_config())
    admin_cli(node.config, "add-station", "501", "--password", "s3cret")
    admin_cli(node.config, "add-station", "502", "--password", "right")
    node.start()
    try:
        figures = flood(node)
    finally:
        assert node.stop() == 0
    print({key: value for key, value in figures.items() if key not in ("answers", "later")})
    assert figures["station_answer"] == ("100", None)
    assert figures["in_flight"] > 0  # 502 was answered while guesses for 501 were still unanswered
    codes = [code for code, _ in figures["answers"]]
    # Derived: at most the queue's 50 and those let in as they made room before the limit (20) was
    # passed; the rest refused at once, the queue full (Retry-After 10) or the client limited.
    assert set(codes) <= {"203", "400"} and codes.count("203") <= 50 + 20
    assert all(retry for code, retry in figures["answers"] if code == "400")
    # Past the limit (20 failures) the guesser is refused without a look at its password:
    assert all(code == "400" and int(retry) > 10 for code, retry in figures["later"])
    lines = access_lines(node)
    print(f"access log: {len(lines)} lines for {len(figures['answers']) + len(figures['later']) + 1} uploads")
    assert len(lines) < 20  # not one a guess: 5 of the guesser's, 502's, the rest summarised
