"""The password flood of issue 20, item 4, against a real daemon, with figures.

200 concurrent wrong HiSPARC passwords for station 501 from 127.0.0.2 while station 502 makes its
first upload with its right password from 127.0.0.3: prints how long 502 waited, how many guesses
were still unanswered when it was answered, the answer codes and the access log's lines.

    venv/bin/python bench/password_flood.py            # the installed stationd
    PYTHONPATH=/tmp/old/src venv/bin/python bench/password_flood.py --old   # an older tree (no new keys)
"""

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from test_e2e import Node, admin_cli  # noqa: E402
from test_e2e_auth import access_lines, flood, flood_config  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", action="store_true", help="a tree without [web] auth_failures etc.")
    parser.add_argument("--guesses", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Path(tmp), flood_config(new=not args.old))
        admin_cli(node.config, "add-station", "501", "--password", "s3cret")
        admin_cli(node.config, "add-station", "502", "--password", "right")
        node.start()
        try:
            figures = flood(node, args.guesses)
        finally:
            node.stop()
        codes = collections.Counter(f"{code} (Retry-After {retry})" if retry else code
                                    for code, retry in figures["answers"])
        print(f"502's first upload: {figures['station_answer'][0]} after {figures['station_wait_s']} s, "
              f"{figures['in_flight']} of {args.guesses} guesses still unanswered")
        print(f"guesses: {dict(codes)}; 5 later guesses: {[tuple(a) for a in figures['later']]}")
        print(f"access log: {len(access_lines(node))} lines for {args.guesses + 6} uploads")


if __name__ == "__main__":
    main()
