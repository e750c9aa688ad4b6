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
  its link closes (its parent, or its hub, is gone);
* it keeps to the frame limits both hellos state (`max_frame`): it reads no
  line longer than its own (8 MiB, or `BOTBUS_MAX_FRAME` bytes) and closes
  its link, naming the limit, at a longer one or at a line that is not JSON;
  it sends none longer than the other side's, answering an ask whose reply
  would be with `BadPayload` instead, as botbus does.

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
# The link, as bytes: stdin/stdout as a child, or a hub's socket once joined.
LINK_IN, LINK_OUT = sys.stdin.buffer, sys.stdout.buffer
# The longest line this module reads, in bytes, without its ending; its
# hello says so.
MAX_FRAME = int(os.environ.get("BOTBUS_MAX_FRAME", 8 * 1024 * 1024))
# The longest line the other side reads, from its hello (None: it said none).
PEER_MAX_FRAME = None
HOT_CELSIUS = float(os.environ.get("THERMO_HOT_CELSIUS", "80"))

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
log = logging.getLogger(MODULE)


class LinkBroken(Exception):
    """The other side broke the protocol: the link must close."""


class FrameTooLong(Exception):
    """A frame longer than the other side reads: it is not sent."""

    def __init__(self, length):
        super().__init__("%d bytes, and %s reads at most %d" % (length, PEER or "the other side", PEER_MAX_FRAME))


# The other side's node name, once its hello came.
PEER = None


def send(frame):
    """Writes one frame: one line of compact JSON, if the other side reads
    one that long (else `FrameTooLong`, and the link is as it was)."""
    line = json.dumps(frame, separators=(",", ":")).encode()
    if PEER_MAX_FRAME is not None and len(line) > PEER_MAX_FRAME:
        raise FrameTooLong(len(line))
    LINK_OUT.write(line + b"\n")
    LINK_OUT.flush()


def read_frame():
    """The next frame, decoded, or None once the link has closed. A line
    longer than MAX_FRAME (not counting its `\\n` or `\\r\\n`) is refused as
    soon as that many bytes came without an ending, and a line that is not
    JSON is refused: both break the link (`LinkBroken`, naming what was
    wrong). Empty lines are skipped."""
    while True:
        line = LINK_IN.readline(MAX_FRAME + 2)
        if not line.endswith(b"\n"):
            if len(line) == MAX_FRAME + 2:
                raise LinkBroken("oversize frame: more than %d bytes without a line end, the limit is %d"
                                 % (MAX_FRAME + 1, MAX_FRAME))
            return None  # the end of the link, maybe in the middle of a line
        content = line[:-1].removesuffix(b"\r")
        if len(content) > MAX_FRAME:
            raise LinkBroken("oversize frame: %d bytes, the limit is %d" % (len(content), MAX_FRAME))
        if not content.strip():
            continue
        try:
            return json.loads(content)
        except ValueError as error:  # not UTF-8, or not JSON
            raise LinkBroken("malformed JSON frame (%d bytes): %s" % (len(content), error)) from None


def payload(name, body):
    return {"name": name, "body": body}


def reply(ask_id, result):
    """Answers ask `ask_id`; a reply too long for the other side is refused
    here, and the asker hears why (`BadPayload`, as from botbus)."""
    try:
        send({"reply": {"id": ask_id, "result": result}})
    except FrameTooLong as too_long:
        why = "the reply of `%s` cannot be sent: %s" % (MODULE, too_long)
        log.warning("%s", why)
        try:
            send({"reply": {"id": ask_id, "result": {"Err": {"BadPayload": why}}}})
        except FrameTooLong:
            # Not even that fits: closing the link ends the ask instead.
            raise LinkBroken("the other side reads no frame long enough to answer an ask") from None


def reply_ok(ask_id, name, body):
    reply(ask_id, {"Ok": payload(name, body)})


def reply_err(ask_id, error):
    reply(ask_id, {"Err": error})


def proof(token, role, prover, verifier, prover_nonce, verifier_nonce):
    """HMAC-SHA256 over the transcript docs/PROTOCOL.md gives."""
    transcript = b"\0".join([b"botbus-auth-v1", role, prover.encode(), verifier.encode(), b""])
    return hmac.new(token, transcript + prover_nonce + verifier_nonce, hashlib.sha256).hexdigest()


def handshake(token):
    """Hellos, and with a token the proofs: this side connected, so it
    proves first, then checks the other side's proof."""
    ours = {"magic": "BBUS", "version": PROTOCOL_VERSION, "node": NODE, "codecs": ["json"],
            "max_frame": MAX_FRAME}
    nonce = secrets.token_bytes(32)
    if token:
        ours.update(auth=["hmac-sha256"], nonce=nonce.hex())
    send(ours)
    hello = read_frame()
    if hello is None:
        sys.exit("the other side closed the link before its hello")
    if not isinstance(hello, dict) or hello.get("magic") != "BBUS" or hello.get("version") != PROTOCOL_VERSION:
        sys.exit("the other side is not a botbus v%d node: %.80r" % (PROTOCOL_VERSION, hello))
    global PEER, PEER_MAX_FRAME
    PEER = hello.get("node")
    if "max_frame" in hello:
        if not isinstance(hello["max_frame"], int) or hello["max_frame"] <= 0:
            sys.exit("%s sent a bad max_frame: %r" % (PEER, hello["max_frame"]))
        PEER_MAX_FRAME = hello["max_frame"]
    if "json" not in hello.get("codecs", []):
        sys.exit("the other side does not speak JSON lines")
    if token:
        if "hmac-sha256" not in hello.get("auth", []):
            sys.exit("%s offers no authentication, and this module has a token" % hello["node"])
        theirs = bytes.fromhex(hello["nonce"])
        send({"proof": proof(token, b"connecting", NODE, hello["node"], nonce, theirs)})
        answer = read_frame() or {}
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
    try:
        answer(ask_id, name, body)
    except (TypeError, ValueError) as error:
        # The asker's body is not what the message's type holds.
        reply_err(ask_id, {"BadPayload": "`%s` cannot take this `%s`: %s" % (MODULE, name, error)})


def answer(ask_id, name, body):
    if name == "thermo.ToFahrenheit":
        reply_ok(ask_id, "f64", float(body) * 9 / 5 + 32)
    elif name == "thermo.Calibrate":
        steps = int(body)
        for step in range(1, steps + 1):
            try:
                send({"progress": {"id": ask_id, "payload": payload("u32", step)}})
            except FrameTooLong as too_long:
                log.warning("progress not sent: %s", too_long)
        reply_ok(ask_id, "string", "calibrated in %d steps" % steps)
    else:
        # A message this module does not take: `BadPayload`, as any botbus
        # module answers (`Remote` is for errors the module itself returns).
        reply_err(ask_id, {"BadPayload": "`%s` cannot take `%s`" % (MODULE, name)})


def on_publish(publish):
    message = publish["payload"]
    if message["name"] != "thermo.Reading":
        return
    try:
        celsius = float(message["body"]["celsius"])
    except (KeyError, TypeError, ValueError) as error:
        log.warning("a reading without a temperature (%r), from %s", error, publish.get("from"))
        return
    if celsius >= HOT_CELSIUS:
        log.warning("too hot: %.1f C (from %s)", celsius, publish["from"])
        alert = {"celsius": celsius, "message": "over %.0f C" % HOT_CELSIUS}
        try:
            send({"publish": {"topic": "alerts/thermo", "from": NODE + "/" + MODULE,
                              "payload": payload("thermo.Alert", alert)}})
        except FrameTooLong as too_long:
            log.warning("alert not published: %s", too_long)


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
    LINK_IN, LINK_OUT = link.makefile("rb"), link.makefile("wb")
    log.info("joined %s", endpoint)


def serve():
    """Takes frames until the link closes or the parent says goodbye."""
    while True:
        frame = read_frame()
        if frame is None:
            return
        if not isinstance(frame, dict) or len(frame) != 1:
            raise LinkBroken("malformed frame: not an object of one field: %.80r" % (frame,))
        (kind, fields), = frame.items()
        try:
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
                return
            # announce, announce_part, subscribe, unsubscribe, credit,
            # cancel, down, pong: nothing to do for a module this simple.
        except (KeyError, TypeError) as error:
            raise LinkBroken("malformed %s frame: %r" % (kind, error)) from None


def main():
    if "--join" in sys.argv:
        join(sys.argv[sys.argv.index("--join") + 1])
    # A child's link is its parent's pipes: no token there.
    token = os.environ.get("BOTBUS_TOKEN", "").rstrip().encode() if "--join" in sys.argv else b""
    try:
        handshake(token)
        serve()
    except LinkBroken as why:
        log.error("closing the link: %s", why)
        sys.exit(1)
    except (BrokenPipeError, ConnectionError):
        # The other side went first (a parent shutting down while this
        # module publishes, say). What was not written is not flushed at
        # exit either: the link's end is pointed at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), LINK_OUT.fileno())
        log.info("the link closed while this module wrote")
    log.info("stopped")


if __name__ == "__main__":
    main()
