#!/usr/bin/python3
"""A small IoT Hub stand-in over AMQP 1.0 for the `amqp` transport's tests, written on Debian's
python3-qpid-proton: an AMQP implementation gatehouse did not write. Run it with /usr/bin/python3
(the module is Debian's, not PyPI's).

It speaks what docs/protocols.md §3 describes, hub side: TLS, SASL ANONYMOUS or no SASL layer
(python-proton's server has no MSSBCBS), the `$cbs` node verifying each put-token (the HMAC over
`sr` as sent, newline, `se`, with the device key derived from the enrollment-group key; the
audience; the expiry), per-device links for telemetry, C2D and direct methods, and the expiry of
a token that is not renewed (the device's links are detached).

    amqp-hub.py --port N --cert F --key F --group-key-file F --out events.jsonl --control DIR
                [--sasl anonymous|none] [--refuse DEVICE ...] [--reject-body TEXT]

Every event is a JSON line in --out: `token` (device, status, renewal), `telemetry` (device,
body, properties, message_id, content_type), `c2d-outcome` (id, device, outcome, condition),
`method-response` (id, device, status, body), `links-detached` (device, reason). A test asks
for C2D messages and method calls by writing `*.json` files into --control:
{"op": "c2d", "id": "...", "device": "...", "body": "...", "properties": {...}} or
{"op": "method", "id": "...", "device": "...", "name": "...", "body": "..."}.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import time
import urllib.parse
import uuid

from proton import Condition, Disposition, Message, SSLDomain, int32, ulong
from proton.handlers import MessagingHandler
from proton.reactor import Container


def device_of(address):
    """The device id of `amqps://host/devices/ID/...`, or None."""
    if not address:
        return None
    path = address.split("://", 1)[-1].split("/")
    if len(path) >= 3 and path[1] == "devices":
        return path[2]
    return None


class Hub(MessagingHandler):
    def __init__(self, args):
        super().__init__(prefetch=200, auto_accept=False)
        self.args = args
        self.group_key = base64.b64decode(open(args.group_key_file).read().strip())
        self.out = open(args.out, "a", buffering=1)
        self.expiry = {}  # device -> token expiry (s)
        self.links = {}  # device -> {role: link}
        self.pending = {}  # delivery -> (id, device)
        self.methods = {}  # correlation uuid -> id
        self.cbs_senders = {}  # connection -> the sender of CBS responses

    def record(self, **event):
        event["t"] = time.time()
        self.out.write(json.dumps(event) + "\n")

    def on_start(self, event):
        self.container = event.container
        self.container.schedule(0.1, self)

    def on_connection_bound(self, event):
        if self.args.sasl == "anonymous":
            sasl = event.transport.sasl()
            sasl.allowed_mechs("ANONYMOUS")

    def on_timer_task(self, event):
        now = time.time()
        for device, expiry in list(self.expiry.items()):
            if expiry < now:
                del self.expiry[device]
                self.detach(device, "token expired")
        self.poll_control()
        self.container.schedule(0.1, self)

    def detach(self, device, reason):
        for link in self.links.pop(device, {}).values():
            if not link.state & link.LOCAL_CLOSED:
                link.close(Condition("amqp:unauthorized-access", reason))
        self.record(kind="links-detached", device=device, reason=reason)

    def poll_control(self):
        directory = self.args.control
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(directory, name)
            with open(path) as file:
                request = json.load(file)
            os.rename(path, path + ".done")
            links = self.links.get(request["device"], {})
            if request["op"] == "c2d" and "c2d" in links:
                message = Message(
                    body=request["body"].encode(), inferred=True, id=request["id"],
                    properties=request.get("properties", {}))
                delivery = links["c2d"].send(message)
                self.pending[delivery] = (request["id"], request["device"])
            elif request["op"] == "method" and "methods-requests" in links:
                correlation = uuid.uuid4()
                self.methods[correlation] = request["id"]
                message = Message(
                    body=request["body"].encode(), inferred=True, correlation_id=correlation,
                    properties={"IoThub-methodname": request["name"]})
                links["methods-requests"].send(message)
            else:
                self.record(kind="control-failed", id=request.get("id"), reason="device has no such link")

    # Links ------------------------------------------------------------------------------------

    def on_link_opening(self, event):
        link = event.link
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        address = link.remote_target.address if link.is_receiver else link.remote_source.address
        if address == "$cbs" or link.remote_source.address == "$cbs":
            if link.is_sender:
                self.cbs_senders[link.connection] = link
            return
        device = device_of(address)
        if device is None or device not in self.expiry:
            link.source.address = None
            link.target.address = None
            link.open()
            link.close(Condition("amqp:unauthorized-access", "no valid token for this device"))
            return
        role = "telemetry"
        if link.is_sender and address.endswith("/messages/devicebound"):
            role = "c2d"
        elif address.endswith("/methods/devicebound"):
            role = "methods-requests" if link.is_sender else "methods-responses"
        self.links.setdefault(device, {})[role] = link

    # Messages from the gateway ----------------------------------------------------------------

    def on_message(self, event):
        link = event.link
        message = event.message
        if link.remote_target.address == "$cbs":
            self.put_token(event, message)
            return
        address = link.remote_target.address
        device = device_of(address)
        if address.endswith("/messages/events"):
            body = message.body
            text = bytes(body).decode("utf-8", "replace") if body is not None else ""
            if self.args.reject_body and self.args.reject_body in text:
                event.delivery.local.condition = Condition("amqp:invalid-field", "refused by the test hub")
                self.reject(event.delivery)
                return
            self.record(
                kind="telemetry", device=device, body=text, properties=message.properties or {},
                message_id=message.id, correlation_id=message.correlation_id,
                content_type=message.content_type, content_encoding=message.content_encoding)
            self.accept(event.delivery)
        elif address.endswith("/methods/devicebound"):
            body = message.body
            self.record(
                kind="method-response", id=self.methods.pop(message.correlation_id, None), device=device,
                status=(message.properties or {}).get("IoThub-status"),
                body=bytes(body).decode("utf-8", "replace") if body is not None else "")
            self.accept(event.delivery)
        else:
            self.accept(event.delivery)

    def put_token(self, event, request):
        properties = request.properties or {}
        audience = properties.get("name", "")
        device = audience.split("/devices/", 1)[-1]
        status, text = self.verify(device, audience, request.body or "")
        renewal = device in self.expiry
        if status == 200:
            self.expiry[device] = self.token_expiry(request.body)
        self.record(kind="token", device=device, status=status, renewal=renewal)
        self.accept(event.delivery)
        reply = Message(
            correlation_id=ulong(request.id), properties={"status-code": int32(status), "status-description": text})
        sender = self.cbs_senders.get(event.connection)
        if sender is not None:
            sender.send(reply)

    @staticmethod
    def token_expiry(token):
        fields = dict(part.split("=", 1) for part in token[len("SharedAccessSignature "):].split("&"))
        return int(fields.get("se", "0"))

    def verify(self, device, audience, token):
        if device in self.args.refuse:
            return 401, "device refused by the test hub"
        if not token.startswith("SharedAccessSignature "):
            return 401, "not a SAS token"
        fields = dict(part.split("=", 1) for part in token[len("SharedAccessSignature "):].split("&"))
        sr, sig, se = fields.get("sr", ""), fields.get("sig", ""), fields.get("se", "0")
        if urllib.parse.unquote(sr).lower() != audience.lower():
            return 401, "token audience does not match"
        if int(se) < time.time():
            return 401, "token expired"
        key = hmac.new(self.group_key, device.encode(), hashlib.sha256).digest()
        expected = base64.b64encode(hmac.new(key, (sr + "\n" + se).encode(), hashlib.sha256).digest()).decode()
        if urllib.parse.unquote(sig) != expected:
            return 401, "signature does not verify"
        return 200, "OK"

    # Outcomes of what the hub sent ------------------------------------------------------------

    def outcome(self, event, outcome):
        entry = self.pending.pop(event.delivery, None)
        if entry is None:
            return
        condition = event.delivery.remote.condition
        self.record(
            kind="c2d-outcome", id=entry[0], device=entry[1], outcome=outcome,
            condition=condition.name if condition else None,
            description=condition.description if condition else None)

    def on_accepted(self, event):
        self.outcome(event, "accepted")

    def on_rejected(self, event):
        self.outcome(event, "rejected")

    def on_released(self, event):
        self.outcome(event, "released")

    def on_modified(self, event):
        self.outcome(event, "modified")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--group-key-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--sasl", choices=["anonymous", "none"], default="anonymous")
    parser.add_argument("--refuse", action="append", default=[])
    parser.add_argument("--reject-body", default=None)
    args = parser.parse_args()
    os.makedirs(args.control, exist_ok=True)
    container = Container(Hub(args))
    domain = SSLDomain(SSLDomain.MODE_SERVER)
    domain.set_credentials(args.cert, args.key, None)
    container.listen("amqps://%s:%d" % (args.host, args.port), ssl_domain=domain)
    container.run()


if __name__ == "__main__":
    main()
