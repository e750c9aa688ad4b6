#!/usr/bin/env python3
"""A botbus module written in Python with only its standard library.

One file, two ways in (docs/PROTOCOL.md), both with the JSON-lines codec:

* as a child: a botbus parent starts this script and links to it over its
  stdin/stdout;
* joined: `python3 child.py --join pipe://robot` (or `--join
  pipe:///path/to/hub.sock`) connects to a hub's Unix socket, as any
  separately started module does, and stops when the hub goes away;
  `--join tcp://host:port` connects over TCP. With a token in the
  environment variable `BOTBUS_TOKEN`, it proves it holds the token
  (docs/PROTOCOL.md, "Authentication"), as every botbus node does.

The module, a thermometer watchdog, shows each part of the protocol a module
needs:

* it answers asks: `thermo.ToFahrenheit` (a number, in Celsius) with an
  `f64`, and `thermo.Calibrate` (a step count) with progress updates first;
* it subscribes to `robot/temp` (`thermo.Reading` messages: {"celsius": x});
* it publishes a `thermo.Alert` on `alerts/thermo` when a reading is too hot;
* it answers anything else with `BadPayload` (a message it does not take),
  cancels nothing it does not run, answers pings, and exits on `bye` or when
  its link closes (its parent, or its hub, is gone).

Log lines go to stderr; the parent re-logs them under this module's name at
the level each line starts with.
"""

import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import sys

PROTOCOL_VERSION = 1
MODULE = os.environ.get("BOTBUS_CHILD_MODULE", "thermo")
NODE = os.environ.get("BOTBUS_CHILD_NODE", "python." + MODULE)
# The link: stdin/stdout as a child, or a hub's socket once joined.
LINK_IN, LINK_OUT = sys.stdin, sys.stdout
HOT_CELSIUS = float(os.environ.get("THERMO_HOT_CELSIUS", "80"))

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
log = logging.getLogger(MODULE)


def send(frame):
    """Writes one frame: one line of compact JSON."""
    LINK_OUT.write(json.dumps(frame, separators=(",", ":")) + "\n")
    LINK_OUT.flush()


def payload(name, body):
    return {"name": name, "body": body}


def reply_ok(ask_id, name, body):
    send({"reply": {"id": ask_id, "result": {"Ok": payload(name, body)}}})


def reply_err(ask_id, error):
    send({"reply": {"id": ask_id, "result": {"Err": error}}})


def proof(token, role, prover, verifier, prover_nonce, verifier_nonce):
    """HMAC-SHA256 over the transcript docs/PROTOCOL.md gives."""
    transcript = b"\0".join([b"botbus-auth-v1", role, prover.encode(), verifier.encode(), b""])
    return hmac.new(token, transcript + prover_nonce + verifier_nonce, hashlib.sha256).hexdigest()


def handshake(token):
    """Hellos, and with a token the proofs: this side connected, so it
    proves first, then checks the other side's proof."""
    ours = {"magic": "BBUS", "version": PROTOCOL_VERSION, "node": NODE, "codecs": ["json"]}
    nonce = secrets.token_bytes(32)
    if token:
        ours.update(auth=["hmac-sha256"], nonce=nonce.hex())
    send(ours)
    line = LINK_IN.readline()
    if not line:
        sys.exit("the other side closed the link before its hello")
    hello = json.loads(line)
    if hello.get("magic") != "BBUS" or hello.get("version") != PROTOCOL_VERSION:
        sys.exit("the other side is not a botbus v%d node: %r" % (PROTOCOL_VERSION, line[:80]))
    if "json" not in hello.get("codecs", []):
        sys.exit("the other side does not speak JSON lines")
    if token:
        if "hmac-sha256" not in hello.get("auth", []):
            sys.exit("%s offers no authentication, and this module has a token" % hello["node"])
        theirs = bytes.fromhex(hello["nonce"])
        send({"proof": proof(token, b"connecting", NODE, hello["node"], nonce, theirs)})
        answer = json.loads(LINK_IN.readline() or "{}")
        if "refused" in answer:
            sys.exit("%s refused the link: %s" % (hello["node"], answer["refused"]))
        expected = proof(token, b"accepting", hello["node"], NODE, theirs, nonce)
        if not hmac.compare_digest(answer.get("proof", ""), expected):
            sys.exit("%s failed to prove it holds the token" % hello["node"])
    elif hello.get("auth"):
        sys.exit("%s requires a token: set BOTBUS_TOKEN" % hello["node"])
    log.info("linked to %s", hello["node"])
    send({"announce": {"modules": [MODULE], "subscriptions": ["robot/temp"]}})


def on_ask(ask):
    ask_id, message = ask["id"], ask["payload"]
    # A body botbus could not give as JSON (a type the robot does not know)
    # comes as `hex` instead; no message this module takes is one of those.
    name, body = message["name"], message.get("body")
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


def socket_path(endpoint):
    """Where a `pipe://` endpoint's socket is, as botbus places it."""
    rest = endpoint[len("pipe://"):]
    if rest.startswith("/"):
        return rest
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "botbus", rest + ".sock")
    import tempfile
    return os.path.join(tempfile.gettempdir(), "botbus-%d" % os.getuid(), rest + ".sock")


def join(endpoint):
    """Links over a hub's Unix socket, or TCP, instead of stdin/stdout."""
    global LINK_IN, LINK_OUT
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://"):].rpartition(":")
        link = socket.create_connection((host.strip("[]"), int(port)))
        link.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        link.connect(socket_path(endpoint))
    LINK_IN = link.makefile("r", encoding="utf-8", newline="\n")
    LINK_OUT = link.makefile("w", encoding="utf-8", newline="\n")
    log.info("joined %s", endpoint)


def main():
    if "--join" in sys.argv:
        join(sys.argv[sys.argv.index("--join") + 1])
    # A child's link is its parent's pipes: no token there.
    token = os.environ.get("BOTBUS_TOKEN", "").rstrip().encode() if "--join" in sys.argv else b""
    handshake(token)
    for line in LINK_IN:
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
