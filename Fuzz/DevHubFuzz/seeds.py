"""Writes the seed corpus for DevHubFuzzer: one file per scenario, first byte = prelude."""
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
os.makedirs(sys.argv[1], exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], f"seed-{name}"), "wb") as f:
        f.write(data)
