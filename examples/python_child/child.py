#!/usr/bin/env python3
"""A botbus module written in Python with only its standard library.

A botbus parent starts this script as a child process and links to it over
its stdin/stdout with the JSON-lines codec (docs/PROTOCOL.md). The module,
a thermometer watchdog, shows each part of the protocol a module needs:

* it answers asks: `thermo.ToFahrenheit` (a number, in Celsius) with an
  `f64`, and `thermo.Calibrate` (a step count) with progress updates first;
* it subscribes to `robot/temp` (`thermo.Reading` messages: {"celsius": x});
* it publishes a `thermo.Alert` on `alerts/thermo` when a reading is too hot;
* it answers anything else with a typed remote error, cancels nothing it
  does not run, answers pings, and exits on `bye` or when stdin closes (its
  parent is gone).

Log lines go to stderr; the parent re-logs them under this module's name at
the level each line starts with.
"""

import json
import logging
import os
import sys

PROTOCOL_VERSION = 1
MODULE = os.environ.get("BOTBUS_CHILD_MODULE", "thermo")
NODE = os.environ.get("BOTBUS_CHILD_NODE", "python." + MODULE)
HOT_CELSIUS = float(os.environ.get("THERMO_HOT_CELSIUS", "80"))

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
log = logging.getLogger(MODULE)


def send(frame):
    """Writes one frame: one line of compact JSON."""
    sys.stdout.write(json.dumps(frame, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def payload(name, body):
    return {"name": name, "body": body}


def reply_ok(ask_id, name, body):
    send({"reply": {"id": ask_id, "result": {"Ok": payload(name, body)}}})


def reply_err(ask_id, error):
    send({"reply": {"id": ask_id, "result": {"Err": error}}})


def handshake():
    send({"magic": "BBUS", "version": PROTOCOL_VERSION, "node": NODE, "codecs": ["json"]})
    line = sys.stdin.readline()
    if not line:
        sys.exit("parent closed stdin before its hello")
    hello = json.loads(line)
    if hello.get("magic") != "BBUS" or hello.get("version") != PROTOCOL_VERSION:
        sys.exit("parent is not a botbus v%d node: %r" % (PROTOCOL_VERSION, line[:80]))
    if "json" not in hello.get("codecs", []):
        sys.exit("parent does not speak JSON lines")
    log.info("linked to %s", hello["node"])
    send({"announce": {"modules": [MODULE], "subscriptions": ["robot/temp"]}})


def on_ask(ask):
    ask_id, message = ask["id"], ask["payload"]
    name, body = message["name"], message["body"]
    if name == "thermo.ToFahrenheit":
        reply_ok(ask_id, "f64", body * 9 / 5 + 32)
    elif name == "thermo.Calibrate":
        for step in range(1, body + 1):
            send({"progress": {"id": ask_id, "payload": payload("u32", step)}})
        reply_ok(ask_id, "string", "calibrated in %d steps" % body)
    else:
        # A message this module does not take: `BadPayload`, as any botbus
        # module answers (`Remote` is for errors the module itself returns).
        reply_err(ask_id, {"BadPayload": "`%s` cannot take `%s`" % (MODULE, name)})


def on_publish(publish):
    message = publish["payload"]
    if message["name"] != "thermo.Reading":
        return
    celsius = message["body"]["celsius"]
    if celsius >= HOT_CELSIUS:
        log.warning("too hot: %.1f C (from %s)", celsius, publish["from"])
        alert = {"celsius": celsius, "message": "over %.0f C" % HOT_CELSIUS}
        send({"publish": {"topic": "alerts/thermo", "from": NODE + "/" + MODULE,
                          "payload": payload("thermo.Alert", alert)}})


def main():
    handshake()
    for line in sys.stdin:
        if not line.strip():
            continue
        frame = json.loads(line)
        (kind, fields), = frame.items()
        if kind == "ask":
            on_ask(fields)
        elif kind == "publish":
            on_publish(fields)
        elif kind == "tell":
            log.info("told %s", fields["payload"]["name"])
        elif kind == "ping":
            send({"pong": {"nonce": fields["nonce"]}})
        elif kind == "bye":
            log.info("parent said goodbye: %s", fields["reason"])
            break
        # announce, subscribe, unsubscribe, credit, cancel, down, pong:
        # nothing to do for a module this simple.
    log.info("stopped")


if __name__ == "__main__":
    main()
