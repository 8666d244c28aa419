#!/usr/bin/env python3
"""A pynsq Reader that knows only nsqlookupd HTTP addresses (no nsqd address).

Run by interop/tests/cluster.rs. The Reader discovers every nsqd holding the topic through
the lookupds' /lookup, connects to each, and finishes every message it gets. Once it has
received --expect distinct bodies it prints what it got and exits 0.

Output on stdout:
    RECEIVED <body>          one line per delivery, in arrival order
    CONNECTIONS <JSON list>  the nsqd addresses ("host:port") it was connected to at the end
    DONE
On any failure it prints "FAIL <reason>" and exits 1; it never runs longer than --timeout
seconds, and SIGALRM kills it a few seconds later should even that hang.
"""

import argparse
import json
import signal
import sys

import nsq
import tornado.ioloop


def say(line):
    print(line, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lookupd-http", action="append", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    signal.alarm(int(args.timeout) + 5)

    received = set()
    loop = tornado.ioloop.IOLoop.current()

    def finish(ok, reason=""):
        if ok:
            say("CONNECTIONS " + json.dumps(sorted(reader.conns.keys())))
            say("DONE")
        else:
            say(f"FAIL {reason}")
        reader.close()
        loop.stop()
        finish.code = 0 if ok else 1

    finish.code = 1

    def handler(message):
        body = message.body.decode()
        say(f"RECEIVED {body}")
        received.add(body)
        message.finish()
        if len(received) >= args.expect:
            # Let the FIN go out before closing.
            loop.call_later(0.2, finish, True)
        return True

    reader = nsq.Reader(
        topic=args.topic,
        channel=args.channel,
        message_handler=handler,
        lookupd_http_addresses=[f"http://{a}" for a in args.lookupd_http],
        lookupd_poll_interval=1,
        lookupd_poll_jitter=0.0,
        max_in_flight=10,
    )
    loop.call_later(
        args.timeout,
        lambda: finish(False, f"timed out with {len(received)} of {args.expect} bodies"),
    )
    loop.start()
    sys.exit(finish.code)


if __name__ == "__main__":
    main()
