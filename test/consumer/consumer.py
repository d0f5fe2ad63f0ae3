#!/usr/bin/python3
"""The Python consumer of docs/consumers.md, run by make test against real
daemons (consumer_test.go), and printing what the Go consumer (main.go)
prints. It declares a durable quorum queue of its own, binds it to every
event of the exchange, and reads it over TLS with the broker's certificate
verified: it decodes both encodings, drops duplicates by id, reports gaps
in each node's sequence less the ranges that outbox.overflow events
report, and keeps the state of every observer from its lifecycle events.

    AMQP_URL=amqps://audit:secret@broker.example.com:5671/ \\
    AMQP_CA_FILE=/etc/ssl/observerd/ca.pem PYTHONPATH=gen \\
    /usr/bin/python3 test/consumer/consumer.py --queue audit

It runs until interrupted, or with --drain until it has read what the
queue held when it started; then it prints what it knows.
"""
import argparse
import itertools
import os
import ssl
import urllib.parse

import pika
from google.protobuf import json_format
from polar.observer.v1 import event_pb2


def connect():
    url = urllib.parse.urlsplit(os.environ["AMQP_URL"])
    # Verifies the broker's certificate and that it is for url.hostname.
    ctx = ssl.create_default_context(cafile=os.environ["AMQP_CA_FILE"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=url.hostname, port=url.port or 5671,
        virtual_host=urllib.parse.unquote(url.path[1:]) or "/",
        credentials=pika.PlainCredentials(urllib.parse.unquote(url.username),
                                          urllib.parse.unquote(url.password)),
        ssl_options=pika.SSLOptions(ctx, server_hostname=url.hostname)))


def decode(props, body):
    """Reads a body in the encoding that its content type names. Fields a
    newer daemon added are skipped in both."""
    if props.content_type == "application/protobuf":
        return event_pb2.Event.FromString(body)
    if props.content_type == "application/json":
        return json_format.Parse(body, event_pb2.Event(), ignore_unknown_fields=True)
    raise ValueError(f"content type {props.content_type!r}")


def subtract(spans, first, last):
    """spans (pairs first, last) less first..last."""
    out = []
    for a, b in spans:
        if b < first or a > last:
            out.append((a, b))
            continue
        if a < first:
            out.append((a, first - 1))
        if b > last:
            out.append((last + 1, b))
    return out


def observer_state(prev, ev):
    """Folds an observer.* event into the state of its source (None for
    other events)."""
    if ev.type in ("observer.started", "observer.restarted"):
        return "running"
    if ev.type == "observer.failed":
        return "failed"
    if ev.type == "observer.quarantined":
        return "quarantined"
    if ev.type == "observer.stopped":
        if prev == "quarantined":
            return prev  # the stop that a quarantine makes
        return "paused" if ev.observer.reason == "paused" else "stopped"
    return None


class Tracker:
    def __init__(self):
        self.seen = set()    # ids handled; keep the last hour's in production
        self.nodes = {}      # node -> {"content_type", "last", "missing"}
        self.observers = {}  # observer (its source) -> its state

    def handle(self, ev, content_type):
        if ev.id in self.seen:
            print(f"duplicate {ev.node} {ev.sequence}")
            return
        self.seen.add(ev.id)

        n = self.nodes.setdefault(ev.node, {"last": 0, "missing": []})
        n["content_type"] = content_type
        if n["last"] == 0:
            pass  # the first event of this node: the sequence is followed from here
        elif ev.sequence > n["last"] + 1:
            print(f"gap {ev.node} {n['last'] + 1}..{ev.sequence - 1}")
            n["missing"].append((n["last"] + 1, ev.sequence - 1))
        elif ev.sequence < n["last"]:
            # A retry overtaken by later events fills its gap.
            n["missing"] = subtract(n["missing"], ev.sequence, ev.sequence)
        n["last"] = max(n["last"], ev.sequence)

        # A range the daemon dropped on purpose, and says so: not a loss. A
        # report without a range (disk_full, memory_full) explains no gap.
        o = ev.outbox_overflow
        if ev.WhichOneof("data") == "outbox_overflow" and o.first_sequence > 0:
            print(f"dropped {ev.node} {o.first_sequence}..{o.last_sequence} ({o.policy})")
            n["missing"] = subtract(n["missing"], o.first_sequence, o.last_sequence)

        state = observer_state(self.observers.get(ev.source), ev)
        if state is not None:
            self.observers[ev.source] = state

    def report(self):
        for source in sorted(self.observers):
            print(source, self.observers[source])
        for name in sorted(self.nodes):
            n = self.nodes[name]
            loss = "lost " + " ".join(f"{a}..{b}" for a, b in n["missing"]) if n["missing"] else "no loss"
            print(f"{name} ({n['content_type']}): {loss}")


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--exchange", default="polar.events", help="the daemon's broker.exchange")
    args.add_argument("--queue", required=True, help="the queue to declare, bind and read")
    args.add_argument("--drain", action="store_true",
                      help="exit once the messages the queue held at the start are read")
    opts = args.parse_args()

    conn = connect()
    ch = conn.channel()
    # As the daemon declares it, so that either may start first.
    ch.exchange_declare(opts.exchange, exchange_type="topic", durable=True)
    # Durable and quorum: it keeps the events while the consumer is away.
    held = ch.queue_declare(opts.queue, durable=True, arguments={"x-queue-type": "quorum"}).method.message_count
    # Every event: gap detection needs all of a node's sequence (# or #.<node>).
    ch.queue_bind(opts.queue, opts.exchange, routing_key="#")
    ch.basic_qos(prefetch_count=100)

    deliveries = ch.consume(opts.queue)
    if opts.drain:
        deliveries = itertools.islice(deliveries, held)
    t = Tracker()
    try:
        for method, props, body in deliveries:
            try:
                ev = decode(props, body)
            except Exception as err:  # a body that is not an event
                print(f"undecodable message {props.message_id!r}: {err}")
                ch.basic_reject(method.delivery_tag, requeue=False)
            else:
                t.handle(ev, props.content_type)
                # Acknowledged once handled: at least once, end to end.
                ch.basic_ack(method.delivery_tag)
    except KeyboardInterrupt:
        pass
    finally:
        t.report()
    conn.close()


if __name__ == "__main__":
    main()
