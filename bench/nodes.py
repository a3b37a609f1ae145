"""What the benchmarks share: a `twistd -n stationd` on a loopback port, and its CPU and memory."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

from sqlalchemy import create_engine, text

BIN = os.path.dirname(sys.executable)
HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_config(workdir, port, extra="", level="warn", web=""):
    """{workdir}/bench.ini: data in {workdir}/var, plain HTTP on ``port``, log ``level``; ``web``: more
    [web] lines; plus ``extra``."""
    path = os.path.join(workdir, "bench.ini")
    with open(path, "w") as f:
        f.write(f"[node]\ndata_dir = {workdir}/var\n[web]\nhttp = tcp:{port}:interface={HOST}\nhttps =\n{web}"
                f"[log]\nlevel = {level}\n{extra}")
    return path


def admin(config, *argv):
    """Run stationd-admin; its last output line (an add-user's API key)."""
    out = subprocess.run([os.path.join(BIN, "stationd-admin"), *argv, "--config", config],
                         check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def start_node(workdir, config, port, log, limit=60, core=None):
    """Start twistd on ``config`` (pinned to ``core`` if given); the process once it answers /heartbeat."""
    command = [os.path.join(BIN, "twistd"), "--pidfile=", "-n", "stationd", "--config", config]
    node = subprocess.Popen((["taskset", "-c", core] if core is not None else []) + command,
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + limit
    while node.poll() is None and time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=1)
            conn.request("GET", "/heartbeat")
            if conn.getresponse().status == 200:
                return node
        except OSError:
            time.sleep(0.05)
    node.kill()
    raise RuntimeError(f"node did not answer /heartbeat (exit status {node.poll()})")


def stop_node(node, log_path):
    """SIGTERM (SIGKILL after 30 s); print what the node logged at warn or above."""
    if node is not None:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
    if log_path and os.path.exists(log_path) and os.path.getsize(log_path):
        with open(log_path, "rb") as f:
            lines = f.readlines()
        print(f"node log: {len(lines)} line(s) at level warn or above; last:\n"
              + b"".join(lines[-10:]).decode("utf-8", "replace"))


def fresh_database(database_url, directory):
    """(URL of an empty database, cleanup): a SQLite file in `directory`, or a new PostgreSQL schema."""
    if not database_url:
        return f"sqlite:///{directory}/stationd.sqlite", lambda: None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop():
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    sep = "&" if "?" in database_url else "?"
    return f"{database_url}{sep}options=-csearch_path%3D{schema}", drop
