#!/usr/bin/env python3
"""pynsq (the official Python client) against an nsqd, connected directly (no lookupd).

Run by interop/tests/pynsq.rs. An nsq.Writer publishes with PUB, MPUB and DPUB; an nsq.Reader
(max_in_flight > 1) consumes, finishing each message, except that the body "requeue-me" is
requeued without delay on its first attempt and finished on its second. Once every body has
been finished, the script polls nsqd's /stats until the channel shows nothing in flight, ready
or deferred (FIN has no reply: only the server can say it arrived), then exits 0.

Both clients ask in IDENTIFY for the upgrades the flags name: --tls-ca-file (TLS, trusting
that CA), --snappy, --deflate. With --big-bytes one more PUB carries a body that large.

Output on stdout, one line per event, for the Rust test to check:
    ACK <pub|mpub|dpub>           a publish command answered OK
    RECEIVED <label> <attempts>   a delivery, in arrival order; the label is the body, or
                                  "big-<bytes>" for the large one
    STATS <channel stats JSON>    the channel's /stats entry once everything is finished
    CLIENTS <JSON>                what /stats then says of the connected clients' upgrades:
                                  {"consumers": [...], "producers": [...]}, each entry with
                                  tls, tls_version, snappy and deflate
    DONE
On any failure it prints "FAIL <reason>" and exits 1. It never runs longer than --timeout
seconds (then it fails), and SIGALRM kills it a few seconds later should even that hang.
"""

import argparse
import asyncio
import json
import logging
import random
import signal
import sys

import nsq
import tornado.httpclient

REQUEUE_BODY = b"requeue-me"
UPGRADE_FIELDS = ("tls", "tls_version", "snappy", "deflate")


def say(line):
    print(line, flush=True)


def expected_bodies(args):
    """Every body published, by the command that publishes it."""
    pubs = [f"pub-{i}".encode() for i in range(args.pubs)] + [REQUEUE_BODY]
    if args.big_bytes:
        letters = random.Random(7).choices(b"abcdefghijklmnopqrstuvwxyz", k=args.big_bytes)
        pubs.append(bytes(letters))
    mpubs = [
        [f"mpub-{b}-{i}".encode() for i in range(args.mpub_size)]
        for b in range(args.mpub_batches)
    ]
    dpubs = [b"dpub-0"]
    return pubs, mpubs, dpubs


def label(body):
    """How a body is reported: itself, or its size when it is the large one."""
    return f"big-{len(body)}" if len(body) > 64 else body.decode()


def upgrades(clients):
    """The upgrade fields of /stats client entries."""
    return [{k: client[k] for k in UPGRADE_FIELDS} for client in clients]


def connection_options(args):
    """The upgrades both clients ask for (keyword arguments of nsq.AsyncConn)."""
    options = {"snappy": args.snappy, "deflate": args.deflate}
    if args.tls_ca_file:
        # pynsq's defaults add cert_reqs=CERT_REQUIRED and TLS 1.2: the server's chain must
        # lead to this CA (tornado does not check the host name with those options).
        options.update(tls_v1=True, tls_options={"ca_certs": args.tls_ca_file})
    return options


class Roundtrip:
    def __init__(self, args):
        self.args = args
        self.pubs, self.mpubs, self.dpubs = expected_bodies(args)
        self.expected = set(self.pubs) | {b for batch in self.mpubs for b in batch} | set(
            self.dpubs
        )
        self.commands = len(self.pubs) + len(self.mpubs) + len(self.dpubs)
        self.acks = 0
        self.finished = set()
        self.published = False
        self.dpub_sent_at = None
        self.done = asyncio.get_running_loop().create_future()
        self.writer = None
        self.reader = None

    def fail(self, reason):
        if not self.done.done():
            self.done.set_exception(RuntimeError(reason))

    def state(self):
        missing = sorted(label(b) for b in self.expected - self.finished)
        return (
            f"acks={self.acks}/{self.commands} "
            f"finished={len(self.finished)}/{len(self.expected)} "
            f"missing={missing[:10]}"
        )

    # Writer side.
    def on_writer_ready(self):
        if self.published:
            return
        self.published = True
        for body in self.pubs:
            self.writer.pub(self.args.topic, body, callback=self.acked("pub"))
        for batch in self.mpubs:
            self.writer.mpub(self.args.topic, batch, callback=self.acked("mpub"))
        self.dpub_sent_at = asyncio.get_running_loop().time()
        for body in self.dpubs:
            self.writer.dpub(self.args.topic, self.args.dpub_ms, body, callback=self.acked("dpub"))

    def acked(self, command):
        def callback(conn, data):
            if isinstance(data, nsq.Error) or data != b"OK":
                self.fail(f"{command} was answered {data!r}")
                return
            self.acks += 1
            say(f"ACK {command}")

        return callback

    # Reader side.
    def handle(self, message):
        body = message.body
        if body not in self.expected:
            say(f"RECEIVED unexpected-{len(body)} {message.attempts}")
            self.fail(f"unexpected body of {len(body)} bytes: {body[:40]!r}")
            return
        say(f"RECEIVED {label(body)} {message.attempts}")
        if body in self.dpubs:
            waited = asyncio.get_running_loop().time() - self.dpub_sent_at
            if waited < self.args.dpub_ms / 1000:
                self.fail(f"{body!r} delivered after {waited:.3f}s, before its DPUB delay")
        if body == REQUEUE_BODY and message.attempts == 1:
            message.requeue(backoff=False, delay=0)
            return
        if body in self.finished:
            self.fail(f"{label(body)!r} delivered again after it was finished")
        message.finish()
        self.finished.add(body)
        if self.finished == self.expected and not self.done.done():
            self.done.set_result(None)

    async def channel_settled(self):
        """Polls /stats until the channel has nothing in flight, ready or deferred; returns the
        channel's entry and the producers'."""
        url = (
            f"http://{self.args.nsqd_http}/stats?format=json"
            f"&topic={self.args.topic}&channel={self.args.channel}"
        )
        client = tornado.httpclient.AsyncHTTPClient()
        while True:
            response = await client.fetch(url, request_timeout=5)
            stats = json.loads(response.body)
            channels = [
                c
                for t in stats.get("topics") or []
                if t["topic_name"] == self.args.topic
                for c in t["channels"]
                if c["channel_name"] == self.args.channel
            ]
            if channels and all(
                channels[0][k] == 0 for k in ("depth", "in_flight_count", "deferred_count")
            ):
                return channels[0], stats.get("producers") or []
            # Paces the polling of the condition above.
            await asyncio.sleep(0.02)

    async def run(self):
        roundtrip = self

        class Writer(nsq.Writer):
            def _on_connection_ready(self, conn, **kwargs):
                super()._on_connection_ready(conn, **kwargs)
                if conn.id in self.conns:
                    roundtrip.on_writer_ready()

        options = connection_options(self.args)
        self.writer = Writer(nsqd_tcp_addresses=[self.args.nsqd_tcp], **options)
        self.reader = nsq.Reader(
            topic=self.args.topic,
            channel=self.args.channel,
            nsqd_tcp_addresses=[self.args.nsqd_tcp],
            message_handler=self.handle,
            max_in_flight=self.args.max_in_flight,
            **options,
        )
        await self.done
        if self.acks != self.commands:
            raise RuntimeError(f"all finished but only {self.acks} publish acknowledgements")
        channel, producers = await self.channel_settled()
        keys = ("depth", "in_flight_count", "deferred_count", "message_count", "requeue_count")
        say("STATS " + json.dumps({k: channel[k] for k in keys}, sort_keys=True))
        # Both connections are still open: /stats shows what each negotiated.
        clients = {
            "consumers": upgrades(channel["clients"] or []),
            "producers": upgrades(producers),
        }
        say("CLIENTS " + json.dumps(clients, sort_keys=True))
        # Closing our own connections makes pynsq log their pending reads as errors.
        logging.getLogger("nsq").setLevel(logging.CRITICAL)
        self.reader.close()
        for conn in list(self.writer.conns.values()):
            conn.close()


async def main(args):
    roundtrip = Roundtrip(args)
    try:
        await asyncio.wait_for(roundtrip.run(), args.timeout)
    except asyncio.TimeoutError:
        say(f"FAIL timed out after {args.timeout}s: {roundtrip.state()}")
        return 1
    except Exception as error:  # noqa: BLE001 - any failure ends the run with its reason
        say(f"FAIL {error}: {roundtrip.state()}")
        return 1
    say("DONE")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsqd-tcp", required=True, help="host:port of nsqd's TCP listener")
    parser.add_argument("--nsqd-http", required=True, help="host:port of nsqd's HTTP listener")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--pubs", type=int, default=10)
    parser.add_argument("--mpub-batches", type=int, default=3)
    parser.add_argument("--mpub-size", type=int, default=10)
    parser.add_argument("--dpub-ms", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--big-bytes", type=int, default=0, help="one more PUB this large")
    parser.add_argument("--tls-ca-file", help="upgrade to TLS, trusting this CA (PEM)")
    parser.add_argument("--snappy", action="store_true", help="upgrade to snappy")
    parser.add_argument("--deflate", action="store_true", help="upgrade to DEFLATE")
    parser.add_argument("--timeout", type=int, default=30, help="seconds before failing")
    arguments = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s %(message)s")
    # The backstop: should the event loop itself hang, SIGALRM's default action kills us.
    signal.alarm(arguments.timeout + 5)
    sys.exit(asyncio.run(main(arguments)))
