"""stationd-client: a node's API from the command line.

URL, API key and CA come from --url/--api-key/--ca, else $STATIOND_URL,
$STATIOND_API_KEY, $STATIOND_CA.
"""

import argparse
import json
import os
import sys

from twisted.internet import defer, task

from stationd.client import Client, ClientError


async def heartbeat(client, args):
    print(await client.heartbeat())


async def status(client, args):
    print(json.dumps(await client.status(), indent=2))


def parser():
    env = os.environ.get
    top = argparse.ArgumentParser(prog="stationd-client", description="Talk to a stationd node.")
    top.add_argument("--url", default=env("STATIOND_URL"), help="node URL ($STATIOND_URL)")
    top.add_argument("--api-key", default=env("STATIOND_API_KEY"), help="API key ($STATIOND_API_KEY)")
    top.add_argument("--ca", default=env("STATIOND_CA"),
                     help="PEM file of the CA (or self-signed certificate) to trust ($STATIOND_CA)")
    top.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    top.add_argument("--key", help="client certificate's private key (PEM)")
    top.add_argument("--timeout", type=float, default=30, help="seconds (default 30)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("heartbeat", help="check the node answers").set_defaults(function=heartbeat)
    sub.add_parser("status", help="the node's status (JSON)").set_defaults(function=status)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    if not args.url:
        fail("no node URL: give --url or set STATIOND_URL")

    async def run(reactor):
        try:
            client = Client(args.url, args.api_key, args.ca, args.cert, args.key,
                            reactor=reactor, timeout=args.timeout)
        except OSError as e:
            fail(f"cannot read {e.filename}: {e.strerror}")
        try:
            await args.function(client, args)
        except ClientError as e:
            fail(str(e))
        finally:
            await client.close()

    # react() exits the process with the code of a SystemExit, else 0.
    task.react(lambda reactor: defer.ensureDeferred(run(reactor)), [])


def fail(message):
    sys.stderr.write(f"stationd-client: {message}\n")
    raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
