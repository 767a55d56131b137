#!/usr/bin/env python3
"""Mints the JWT attack suite for GatehouseAuthTests with an independent library (PyJWT).

Run by the Swift tests at test time: fresh RSA and EC key pairs every run, nothing committed.

    python3 jwt_fixtures.py OUT_DIR

Writes to OUT_DIR:
  jwks.json          public keys rsa-1 (RSA, no alg, like Entra's) and ec-1 (P-256, alg ES256,
                     with Entra's templated v2 `issuer` member)
  jwks-rotated.json  rsa-2 replaces rsa-1; ec-1 stays
  shared.key         32 random bytes, hex (the HS256 key of the symmetric-key test)
  cases.json         {"now", "tenant", "otherTenant", "audiences", "cases": [{"name", "token", "expect"}]}
                     expect is "ok", "any" (must not crash) or an AuthError code
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import uuid

try:
    import jwt
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError as error:  # the Swift test prints this and fails
    print(f"MISSING-PACKAGES: {error}; run scripts/setup (pip: pyjwt[crypto])", file=sys.stderr)
    sys.exit(3)

NOW = 1_800_000_000
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
APP_ID_URI = "api://gatehouse"
V1_ISS = f"https://sts.windows.net/{TENANT}/"
V2_ISS = f"https://login.microsoftonline.com/{TENANT}/v2.0"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key, kid, **extra):
    algorithm = RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "use": "sig", **extra})
    return jwk


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    rsa1, rsa2, rsa_stranger = rsa_key(), rsa_key(), rsa_key()
    ec1 = ec.generate_private_key(ec.SECP256R1())
    shared = os.urandom(32)

    jwk_rsa1 = public_jwk(rsa1, "rsa-1", x5t="rsa-1")
    jwk_ec1 = public_jwk(ec1, "ec-1", alg="ES256", issuer="https://login.microsoftonline.com/{tenantid}/v2.0")
    jwk_rsa2 = public_jwk(rsa2, "rsa-2")
    with open(os.path.join(out_dir, "jwks.json"), "w") as f:
        json.dump({"keys": [jwk_rsa1, jwk_ec1]}, f)
    with open(os.path.join(out_dir, "jwks-rotated.json"), "w") as f:
        json.dump({"keys": [jwk_rsa2, jwk_ec1]}, f)
    with open(os.path.join(out_dir, "shared.key"), "w") as f:
        f.write(shared.hex())

    def v1(**changes):
        claims = {
            "aud": APP_ID_URI, "iss": V1_ISS, "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
            "appid": str(uuid.uuid4()), "appidacr": "2", "idp": V1_ISS, "oid": str(uuid.uuid4()),
            "roles": ["Command.Operator"], "sub": str(uuid.uuid4()), "tid": TENANT,
            "uti": b64(os.urandom(16)), "ver": "1.0",
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def v2(**changes):
        claims = {
            "aud": CLIENT_ID, "iss": V2_ISS, "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
            "azp": str(uuid.uuid4()), "azpacr": "1", "name": "Operator One", "oid": str(uuid.uuid4()),
            "preferred_username": "operator@contoso.example", "scp": "Commands.Send",
            "sub": str(uuid.uuid4()), "tid": TENANT, "uti": b64(os.urandom(16)), "ver": "2.0",
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(claims, key=rsa1, alg="RS256", kid="rsa-1", **headers):
        if kid is not None:
            headers["kid"] = kid
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    def sign_bytes(payload: bytes, key=rsa1, alg="RS256", kid="rsa-1"):
        return jwt.api_jws.PyJWS().encode(payload, key, algorithm=alg, headers={"kid": kid})

    def hs256_by_hand(header, claims, secret: bytes):
        # PyJWT refuses a PEM public key as an HMAC secret (its own guard against this very
        # attack), so the confused token is built by hand.
        signing_input = f"{b64json(header)}.{b64json(claims)}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    def rs256_raw(header_json: str, payload_json: str):
        # Raw JSON text (duplicate member names), signed with cryptography directly.
        signing_input = f"{b64(header_json.encode())}.{b64(payload_json.encode())}"
        signature = rsa1.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(signature)}"

    good_claims = json.dumps(v2())
    duplicate_aud = good_claims[:-1] + ', "aud": "api://someone-else"}'

    rsa1_public_pem = rsa1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    valid_v2 = sign(v2())
    header_part, _, signature_part = valid_v2.split(".")
    tampered = f"{header_part}.{b64json(v2(scp='Commands.Send Devices.Admin'))}.{signature_part}"

    cases = [
        ("v1-valid", sign(v1(), x5t="rsa-1", typ="JWT"), "ok"),
        ("v2-valid", valid_v2, "ok"),
        ("v2-es256-valid", sign(v2(), key=ec1, alg="ES256", kid="ec-1"), "ok"),
        ("v1-audience-is-client-id", sign(v1(aud=CLIENT_ID)), "ok"),
        ("audience-array", sign(v2(aud=["https://other.example", CLIENT_ID])), "ok"),
        ("expired-within-skew", sign(v2(exp=NOW - 60)), "ok"),
        ("nbf-within-skew", sign(v2(nbf=NOW + 60)), "ok"),
        ("tenant-upper-case", sign(v2(tid=TENANT.upper())), "ok"),
        ("alg-none", jwt.encode(v2(), None, algorithm="none", headers={"kid": "rsa-1"}), "auth.algorithm-not-allowed"),
        ("alg-none-upper", f"{b64json({'alg': 'NONE', 'kid': 'rsa-1'})}.{b64json(v2())}.", "auth.algorithm-not-allowed"),
        ("hs256-with-rsa-public-key",
         hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, v2(), rsa1_public_pem),
         "auth.algorithm-not-allowed"),
        ("ps256-not-allowed", sign(v2(), alg="PS256"), "auth.algorithm-not-allowed"),
        ("tampered-payload", tampered, "auth.bad-signature"),
        ("signed-by-stranger-with-known-kid", sign(v2(), key=rsa_stranger), "auth.bad-signature"),
        ("expired", sign(v2(exp=NOW - 3600)), "auth.expired"),
        ("nbf-in-future", sign(v2(nbf=NOW + 3600)), "auth.not-yet-valid"),
        ("no-exp", sign(v2(exp=None)), "auth.missing-claim"),
        ("no-nbf", sign(v2(nbf=None)), "auth.missing-claim"),
        ("no-iat", sign(v2(iat=None)), "auth.missing-claim"),
        ("iat-in-future", sign(v2(iat=NOW + 3600)), "auth.issued-in-future"),
        ("iat-within-skew", sign(v2(iat=NOW + 60)), "ok"),
        ("iat-is-string", sign(v2(iat=str(NOW))), "auth.malformed"),
        ("exp-is-string", sign(v2(exp=str(NOW + 3600))), "auth.missing-claim"),
        ("wrong-issuer-other-tenant", sign(v2(iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0")),
         "auth.wrong-issuer"),
        ("wrong-issuer-host", sign(v2(iss=f"https://login.evil.example/{TENANT}/v2.0")), "auth.wrong-issuer"),
        ("v1-token-on-v2-only-key", sign(v1(), key=ec1, alg="ES256", kid="ec-1"), "auth.wrong-issuer"),
        ("wrong-audience", sign(v2(aud="api://someone-else")), "auth.wrong-audience"),
        ("wrong-tenant",
         sign(v2(tid=OTHER_TENANT, iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0")),
         "auth.wrong-tenant"),
        ("v1-wrong-tenant", sign(v1(tid=OTHER_TENANT, iss=f"https://sts.windows.net/{OTHER_TENANT}/")),
         "auth.wrong-tenant"),
        ("tenant-not-guid", sign(v2(tid="contoso.onmicrosoft.com")), "auth.wrong-tenant"),
        ("no-tenant", sign(v2(tid=None)), "auth.wrong-tenant"),
        ("unknown-kid", sign(v2(), key=rsa_stranger, kid="rsa-unknown"), "auth.unknown-key"),
        ("rotated-key-before-rotation", sign(v2(), key=rsa2, kid="rsa-2"), "auth.unknown-key"),
        ("no-kid", sign(v2(), kid=None), "auth.missing-kid"),
        ("rs256-header-ec-kid", sign(v2(), key=rsa1, alg="RS256", kid="ec-1"), "auth.algorithm-key-mismatch"),
        ("es256-header-rsa-kid", sign(v2(), key=ec1, alg="ES256", kid="rsa-1"), "auth.algorithm-key-mismatch"),
        ("crit-header", sign(v2(), crit=["exp"], exp=NOW + 3600), "auth.unsupported-critical-header"),
        ("oversized", sign(v2(padding="x" * 9000)), "auth.too-large"),
        ("malformed-base64-header", "e30*." + valid_v2.split(".", 1)[1], "auth.malformed"),
        ("malformed-base64-signature", valid_v2[:-4] + "!!!!", "auth.malformed"),
        ("header-not-json", f"{b64(b'{not json')}.{b64json(v2())}.{signature_part}", "auth.malformed"),
        ("header-is-array", f"{b64json(['RS256'])}.{b64json(v2())}.{signature_part}", "auth.malformed"),
        ("payload-not-json-signed", sign_bytes(b"{\"sub\": oops"), "auth.malformed"),
        ("payload-is-string-signed", sign_bytes(b"\"just a string\""), "auth.malformed"),
        ("two-parts", ".".join(valid_v2.split(".")[:2]), "auth.malformed"),
        ("four-parts", valid_v2 + ".e30", "auth.malformed"),
        ("empty-signature", ".".join(valid_v2.split(".")[:2]) + ".", "auth.malformed"),
        ("empty", "", "auth.malformed"),
        ("duplicate-alg-in-header", rs256_raw('{"alg":"RS256","kid":"rsa-1","alg":"none"}', good_claims), "auth.malformed"),
        ("duplicate-aud-in-payload", rs256_raw('{"alg":"RS256","kid":"rsa-1"}', duplicate_aud), "auth.malformed"),
        ("duplicate-escaped-name-in-payload",
         rs256_raw('{"alg":"RS256","kid":"rsa-1"}', good_claims[:-1] + ', "\\u0061ud": "api://someone-else"}'),
         "auth.malformed"),
        ("nested-claims-ok", sign(v2(ctx={"a": [{"b": {"c": [1, 2, {"d": None}]}}]})), "ok"),
        ("deeply-nested-payload", sign_bytes(b"[" * 2000 + b"]" * 2000), "auth.malformed"),
    ]
    names = [name for name, _, _ in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump({
            "now": NOW, "tenant": TENANT, "otherTenant": OTHER_TENANT, "audiences": [APP_ID_URI, CLIENT_ID],
            "rotatedToken": sign(v2(), key=rsa2, kid="rsa-2"), "oldKeyToken": sign(v2()),
            "hs256": hs256_by_hand({"alg": "HS256", "kid": "shared-1"}, v2(), shared),
            "hs256RSAConfusion": hs256_by_hand({"alg": "HS256", "kid": "rsa-1"}, v2(), rsa1_public_pem),
            "cases": [{"name": n, "token": t, "expect": e} for n, t, e in cases],
        }, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: jwt_fixtures.py OUT_DIR")
    main(sys.argv[1])
