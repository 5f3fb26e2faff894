#!/usr/bin/python3
"""zgp_curve_peer: a minimal ZGP v1 node over pyzmq, with CURVE, behind the line protocol of
tests/support (the same one the CZMQ reference peer and `zgossip node` speak).

Why this and not CZMQ: CURVE in CZMQ's zgossip (SET PUBLICKEY, SET SECRETKEY, ZAP DOMAIN,
CONNECT endpoint key) is draft API, and Debian's libczmq 4.2.1 is built without it: the library
holds none of those method names, and its CONNECT ignores a second argument. pyzmq (Debian's
python3-zmq) runs on the same libzmq 4.3.4 with libsodium, so this peer is an independent CURVE
implementation of the far end, and ZGP is spelled out here by hand from proto/zgp.md.

Usage:  zgp_curve_peer.py [--public-key Z85 --secret-key Z85]
        Without keys it makes a throwaway pair for CONNECT and binds plain listeners.
stdin   BIND ep            ROUTER listener; a CURVE server when keys were given
        CONNECT ep KEY     DEALER; a CURVE client of the server with public key KEY, presenting
                           our keypair; says HELLO and publishes every tuple held
        PUBLISH k v        stores the tuple, prints DELIVER, sends it to every peer
        STATUS / PORT      replies STATUS n (tuples held) / PORT n (last tcp bind, else 0)
        $TERM              exits (so does EOF)
stdout  DELIVER k v        a tuple new to this node (its own included, as CZMQ), then replies.
As CZMQ: store-if-new; a new tuple goes to every other peer; PING gets PONG; INVALID makes a
client say HELLO again; bytes after a PUBLISH's value are ignored (ttl and our extensions).
The client PINGs every 300 ms so a 1 s server timeout never forgets it.
"""

import os
import struct
import sys
import time

import zmq

HEADER = b"\xaa\xa0"
HELLO, PUBLISH, PING, PONG, INVALID = 1, 2, 3, 4, 5
PING_INTERVAL = 0.3


def message(kind, body=b""):
    return HEADER + bytes([kind, 1]) + body


def publish(key, value):
    k, v = key.encode(), value.encode()
    return message(PUBLISH, bytes([len(k)]) + k + struct.pack(">I", len(v)) + v + b"\0\0\0\0")


def decode(frame):
    """(kind, key, value); key and value only for PUBLISH; None if not ZGP v1."""
    if len(frame) < 4 or frame[:2] != HEADER or frame[3] != 1:
        return None
    kind = frame[2]
    if kind != PUBLISH:
        return kind, None, None
    klen = frame[4]
    key = frame[5 : 5 + klen]
    (vlen,) = struct.unpack(">I", frame[5 + klen : 9 + klen])
    value = frame[9 + klen : 9 + klen + vlen]
    return kind, key.decode(), value.decode()


def send(dealer, frame):
    """Sends without blocking: a DEALER whose handshake was refused has nowhere to queue."""
    try:
        dealer.send(frame, zmq.NOBLOCK)
    except zmq.Again:
        pass


def log(line):
    """Diagnostics on stderr, which the tests quote when one fails."""
    sys.stderr.write(f"{time.monotonic():.3f} {line}\n")
    sys.stderr.flush()


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Peer:
    def __init__(self, public_key, secret_key, curve_server):
        self.context = zmq.Context()
        self.public_key, self.secret_key = public_key, secret_key
        self.curve_server = curve_server
        self.router = None
        self.dealers = []
        self.sessions = set()
        self.tuples = {}
        self.port = 0
        self.poller = zmq.Poller()

    def bind(self, endpoint):
        if self.router is None:
            self.router = self.context.socket(zmq.ROUTER)
            self.router.linger = 0
            if self.curve_server:
                self.router.curve_secretkey = self.secret_key
                self.router.curve_server = True
            self.poller.register(self.router, zmq.POLLIN)
        self.router.bind(endpoint)
        last = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.port = int(last.rsplit(":", 1)[1]) if last.startswith("tcp://") else 0

    def connect(self, endpoint, server_key):
        dealer = self.context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.curve_publickey = self.public_key
        dealer.curve_secretkey = self.secret_key
        dealer.curve_serverkey = server_key.encode()
        dealer.connect(endpoint)
        log(f"dialled {endpoint}")
        self.poller.register(dealer, zmq.POLLIN)
        self.dealers.append(dealer)
        self.hello(dealer)

    def hello(self, dealer):
        send(dealer, message(HELLO))
        for key, value in self.tuples.items():
            send(dealer, publish(key, value))

    def accept(self, key, value, came_from=None):
        if self.tuples.get(key) == value:
            return
        self.tuples[key] = value
        say(f"DELIVER {key} {value}")
        frame = publish(key, value)
        for session in self.sessions:
            if session != came_from:
                self.router.send_multipart([session, frame])
        for dealer in self.dealers:
            if dealer is not came_from:
                send(dealer, frame)

    def on_router(self):
        session, frame = self.router.recv_multipart()[:2]
        decoded = decode(frame)
        if decoded is None:
            return
        kind, key, value = decoded
        if kind == PING:
            self.router.send_multipart([session, message(PONG)])
        elif kind == HELLO:
            log(f"HELLO from {session.hex()}; sending {len(self.tuples)} tuples")
            self.sessions.add(session)
            for k, v in self.tuples.items():
                self.router.send_multipart([session, publish(k, v)])
        elif session not in self.sessions:
            log(f"{kind} from {session.hex()} before HELLO; INVALID")
            self.router.send_multipart([session, message(INVALID)])
        elif kind == PUBLISH:
            self.accept(key, value, session)

    def on_dealer(self, dealer):
        decoded = decode(dealer.recv())
        if decoded is None:
            return
        kind, key, value = decoded
        if kind == PUBLISH:
            self.accept(key, value, dealer)
        elif kind == INVALID:
            log("INVALID from a server; HELLO again")
            self.hello(dealer)

    def on_line(self, line):
        words = line.split(" ")
        verb, args = words[0], words[1:]
        if verb == "BIND" and len(args) == 1:
            self.bind(args[0])
        elif verb == "CONNECT" and len(args) == 2:
            self.connect(args[0], args[1])
        elif verb == "PUBLISH" and len(args) >= 2:
            self.accept(args[0], " ".join(args[1:]))
        elif verb == "STATUS":
            say(f"STATUS {len(self.tuples)}")
        elif verb == "PORT":
            say(f"PORT {self.port}")
        elif verb == "$TERM":
            return False
        elif line:
            say(f"ERROR unknown command {line}")
        return True

    def run(self):
        stdin = sys.stdin.fileno()
        self.poller.register(stdin, zmq.POLLIN)
        pending = b""
        next_ping = time.monotonic() + PING_INTERVAL
        while True:
            timeout = max(0, next_ping - time.monotonic()) * 1000
            for item, _ in self.poller.poll(timeout):
                if item == stdin:
                    data = os.read(stdin, 65536)
                    if not data:
                        return
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if not self.on_line(line.decode().rstrip("\r")):
                            return
                elif item is self.router:
                    self.on_router()
                else:
                    self.on_dealer(item)
            if time.monotonic() >= next_ping:
                for dealer in self.dealers:
                    send(dealer, message(PING))
                next_ping = time.monotonic() + PING_INTERVAL


def main():
    args = sys.argv[1:]
    keys = dict(zip(args[::2], args[1::2]))
    public_key = keys.get("--public-key", "").encode()
    secret_key = keys.get("--secret-key", "").encode()
    given = bool(public_key and secret_key)
    if not given:
        public_key, secret_key = zmq.curve_keypair()
    Peer(public_key, secret_key, given).run()


if __name__ == "__main__":
    main()
