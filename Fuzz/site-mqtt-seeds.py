#!/usr/bin/env python3
"""Writes the hand-made seeds of SiteMQTTFuzzer (what a broker sends the site subscriber).

Each file is a 5-byte header -- byte 0 picks the decoder's packet limit (bits 0-1: 2, 64, 512,
4096 bytes) and the kept head of a skipped PUBLISH (bits 2-3: 0, 16, 4096 bytes); bytes 1-4 are
read sizes used in turn (0: the rest in one read, n: max(1, n*n // 8) bytes) -- then the byte stream.
    python3 site-mqtt-seeds.py corpus/site-mqtt
"""
import hashlib
import os
import sys


def remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def string(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def publish(topic, payload, qos=0, packet_id=1, retain=False, dup=False):
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return packet(first, body)


CONNACK = packet(0x20, b"\x01\x00")  # session present, accepted
SUBACK = packet(0x90, b"\x00\x01\x01\x01")  # packet id 1, QoS 1 granted twice
PINGRESP = packet(0xD0, b"")
PUBACK = packet(0x40, b"\x00\x05")
UNSUBACK = packet(0xB0, b"\x00\x02")
EVENT0 = publish("devices/dev-1/messages/events/a=1", b'{"t":21.5}')
EVENT1 = publish("devices/dev-2/messages/events/a=1&b=2", b"\x00\x01\x02hello", qos=1, packet_id=7)
SITE = publish("site/pump-3/up", b"on", qos=1, packet_id=0xFFFF, retain=True, dup=True)
METHOD = publish("devices/dev-1/methods/res/200/?$rid=3", b'{"ok":true}', qos=1, packet_id=9)
NODEVICE = publish("devices//messages/events/", b"x")
BIG0 = publish("devices/dev-1/messages/events/big=1", bytes(range(256)) * 3)
BIG1 = publish("devices/dev-4/messages/events/", b"A" * 5000, qos=1, packet_id=2)
LONGTOPIC = publish("devices/dev-5/messages/events/" + "k=v&" * 40, b"p", qos=1, packet_id=3)
NONMINIMAL = b"\xd0\x80\x00" + b"\x40\x82\x80\x00\x00\x06"
SESSION = CONNACK + SUBACK + EVENT0 + EVENT1 + METHOD + PINGRESP + PUBACK + SITE

SEEDS = {
    "connack": (0x03, b"\x00\x00\x00\x00", CONNACK),
    "suback": (0x03, b"\x00\x00\x00\x00", SUBACK),
    "pingresp-puback-unsuback": (0x03, b"\x01\x01\x01\x01", PINGRESP + PUBACK + UNSUBACK),
    "publish-qos0": (0x03, b"\x00\x00\x00\x00", EVENT0),
    "publish-qos1": (0x03, b"\x03\x09\x00\x00", EVENT1),
    "publish-site-retain-dup": (0x02, b"\x00\x00\x00\x00", SITE),
    "method-response": (0x02, b"\x02\x00\x00\x00", METHOD),
    "no-device": (0x01, b"\x00\x00\x00\x00", NODEVICE),
    "session-one-read": (0x07, b"\x00\x00\x00\x00", SESSION),
    "session-byte-by-byte": (0x03, b"\x01\x01\x01\x01", SESSION),
    "session-odd-reads": (0x0B, b"\x09\x0d\x03\x1a", SESSION),
    "oversized-skipped": (0x05, b"\x00\x00\x00\x00", CONNACK + BIG0 + PINGRESP),
    "oversized-streamed": (0x06, b"\x10\x30\xff\x03", BIG1 + EVENT1 + BIG0 + PUBACK),
    "oversized-long-topic": (0x01, b"\x10\x00\x00\x00", LONGTOPIC + EVENT0),
    "non-minimal-length": (0x03, b"\x00\x00\x00\x00", NONMINIMAL + EVENT0),
    "reconnect-after-error": (0x03, b"\x0a\x00\x00\x00", CONNACK + b"\xf0\x00" + SUBACK + EVENT1),
}

out = sys.argv[1] if len(sys.argv) > 1 else "corpus/site-mqtt"
os.makedirs(out, exist_ok=True)
for name, (config, reads, stream) in SEEDS.items():
    data = bytes([config]) + reads + stream
    with open(os.path.join(out, f"seed-{name}"), "wb") as f:
        f.write(data)
