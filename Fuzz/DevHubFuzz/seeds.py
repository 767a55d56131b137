"""Writes the seed corpus for DevHubFuzzer: one file per scenario, first byte = prelude (3: AMQP)."""
import base64
import os
import struct
import sys


def remaining(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + remaining(len(body)) + body


def subscribe(pid, *filters):
    return packet(0x82, struct.pack(">H", pid) + b"".join(string(f) + bytes([q]) for f, q in filters))


def publish(topic, payload=b"", qos=0, pid=1):
    body = string(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


def connect(client, user, password):
    flags = 0xC2
    body = string("MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + string(client) + string(user) + string(password)
    return packet(0x10, body)


dev = "harness-device"
seeds = {
    "hub-twin": bytes([1]) + subscribe(1, ("$iothub/twin/res/#", 0), (f"devices/{dev}/messages/devicebound/#", 1))
    + publish("$iothub/twin/GET/?$rid=1") + publish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"a":{"b":1}}', 1, 2)
    + packet(0xC0, b"") + packet(0xE0, b""),
    "hub-telemetry": bytes([1]) + publish(f"devices/{dev}/messages/events/%24.ct=text%2Fplain&k=v&flag", b"21.5", 1, 7),
    "hub-method": bytes([1]) + subscribe(3, ("$iothub/methods/POST/#", 0)) + publish("$iothub/methods/res/200/?$rid=1", b"{}"),
    "hub-foreign": bytes([1]) + subscribe(4, ("devices/other/messages/devicebound/#", 1), ("#", 0))
    + publish("devices/other/messages/events/", b"x", 1, 5),
    "dps": bytes([2]) + subscribe(1, ("$dps/registrations/res/#", 1))
    + publish("$dps/registrations/PUT/iotdps-register/?$rid=1", b'{"registrationId":"harness-registration"}', 1, 2)
    + publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.x.y", b""),
    "raw-connect": bytes([0]) + connect(dev, f"devhub.harness/{dev}/?api-version=2021-04-12",
                                        "SharedAccessSignature sr=devhub.harness%2Fdevices%2Fharness-device&sig=AAAA&se=1"),
    "raw-dps-connect": bytes([0]) + connect("r1", "0ne00HARNESS/registrations/r1/api-version=2019-03-31", "x"),
}
# A whole AMQP connection (first byte 3: the AMQP endpoint, docs/protocols.md §3) as proton's
# client sends it, no SASL: header, open, begin, $cbs links, a put-token for harness-device, a
# telemetry link and message, a C2D link (DevHubTests' AMQPConnectionHarnessTests.transcript).
AMQP_TRANSCRIPT = base64.b64decode(
    "QU1RUAABAAAAAAA4AgAAAABTEMArCqEOaGFybmVzcy1jbGllbnShDmRldmh1Yi5oYXJuZXNzQGB//0BAQEBAQAAAABoCAAAA"
    "AFMRwA0EQENwf////3B/////AAAAUAIAAAAAUxLAQw6hCyRjYnMtc2VuZGVyQ0JQAlAAAFMowBELoQQkY2JzQ0BDQkBAQEBA"
    "QABTKcANB6EEJGNic0NAQ0JAQEBAQ0RAQEAAAABTAgAAAABTEsBGDqENJGNicy1yZWNlaXZlclIBQVACUAAAUyjAEQuhBCRj"
    "YnNDQENCQEBAQEBAAFMpwA0HoQQkY2JzQ0BDQkBAQEBDREBAQAAAACECAAAAAFMTwBQJQHB/////Q3B/////UgFDUmRAQgAA"
    "ARsCAAAAAFMUwAcEQ0OgATBDAFNwRQBTc8ACAUQAU3TRAAAAbgAAAAahCW9wZXJhdGlvbqEJcHV0LXRva2VuoQR0eXBloR9z"
    "ZXJ2aWNlYnVzLndpbmRvd3MubmV0OnNhc3Rva2VuoQRuYW1loSVkZXZodWIuaGFybmVzcy9kZXZpY2VzL2hhcm5lc3MtZGV2"
    "aWNlAFN3oYFTaGFyZWRBY2Nlc3NTaWduYXR1cmUgc3I9ZGV2aHViLmhhcm5lc3MvZGV2aWNlcy9oYXJuZXNzLWRldmljZSZz"
    "aWc9TkxLTTZKJTJCUndLQWNYd2pacUt3Y0pTOWVpTEowaWVGSzRkeEVYWEQ1Y0p3JTNEJnNlPTQxMDI0NDQ4MDAAAACAAgAA"
    "AABTEsBzDqEGZXZlbnRzUgJCUAJQAABTKMAMC0BDQENCQEBAQEBAAFMpwEYHoT1hbXFwczovL2Rldmh1Yi5oYXJuZXNzL2Rl"
    "dmljZXMvaGFybmVzcy1kZXZpY2UvbWVzc2FnZXMvZXZlbnRzQ0BDQkBAQEBDREBAQAAAAEECAAAAAFMUwAkEUgJSAaABMUMA"
    "U3BFAFNzwAYBoQNtLTEAU3TRAAAACgAAAAKhAWuhAXYAU3WgBWhlbGxvAAAAggIAAAAAUxLAdQ6hA2MyZFIDQVACUAAAUyjA"
    "TwuhQmFtcXBzOi8vZGV2aHViLmhhcm5lc3MvZGV2aWNlcy9oYXJuZXNzLWRldmljZS9tZXNzYWdlcy9kZXZpY2Vib3VuZENA"
    "Q0JAQEBAQEAAUynACAdAQ0BDQkBAQEBDREBAQAAAACICAAAAAFMTwBUJQ3B/////UgJwf////1IDQ1IKQEI="
)
seeds["amqp-transcript"] = bytes([3]) + AMQP_TRANSCRIPT
seeds["amqp-sasl-mssbcbs"] = bytes([3]) + b"AMQP\x03\x01\x00\x00" + struct.pack(">IBBH", 23, 2, 1, 0) \
    + b"\x00\x53\x41\xc0\x0a\x01\xa3\x07MSSBCBS" + AMQP_TRANSCRIPT
os.makedirs(sys.argv[1], exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], f"seed-{name}"), "wb") as f:
        f.write(data)
