"""Do this machine's cores slow each other down?  CPU a HiSPARC decode, alone and with a twin.

The scale-out bound (bench/scaleout.py) assumes a request costs the same CPU whether one
process is busy or two.  Here one process decodes 100-event HiSPARC pickles for
``--seconds`` of CPU alone, then two do at once, pinned to cores 0 and 1.

    venv/bin/python bench/cores.py [--seconds 8]
"""

import argparse
import os
import subprocess
import sys
import time

from ingest import hisparc_pickle

from stationd.hisparc import decode_upload


def decode_for(seconds):
    data = hisparc_pickle(0)
    start, n = time.process_time(), 0
    while time.process_time() - start < seconds:
        decode_upload(data)
        n += 1
    return (time.process_time() - start) / n * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{decode_for(args.seconds):.2f}")
        return
    command = [sys.executable, os.path.abspath(__file__), "--child", "--seconds", str(args.seconds)]
    alone = subprocess.run(["taskset", "-c", "0", *command], capture_output=True, text=True, check=True).stdout
    twins = [subprocess.Popen(["taskset", "-c", str(core), *command], stdout=subprocess.PIPE, text=True)
             for core in (0, 1)]
    together = [twin.communicate()[0].strip() for twin in twins]
    print(f"CPU ms a decode: alone {alone.strip()}; two at once {' and '.join(together)}")


if __name__ == "__main__":
    main()
