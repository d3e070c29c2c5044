"""Independent check of a SPIFFE bundle document (stdin): json for the
structure, cryptography for every x5c certificate (must load, must be a CA,
must carry the JWK's key), PyJWT for the JWT keys. Prints a JSON summary;
exits 1 with the reason on stderr for anything wrong."""
import base64
import json
import sys

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization


def fail(msg):
    sys.stderr.write(msg + "\n")
    sys.exit(1)


doc = json.load(sys.stdin)
if not isinstance(doc.get("keys"), list):
    fail("no keys array")
seq = doc.get("spiffe_sequence")
hint = doc.get("spiffe_refresh_hint")
x509_subjects = []
jwt_kids = []
for i, k in enumerate(doc["keys"]):
    use = k.get("use")
    if use == "x509-svid":
        x5c = k.get("x5c")
        if not isinstance(x5c, list) or len(x5c) != 1:
            fail(f"keys[{i}]: x5c must hold one certificate")
        cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            fail(f"keys[{i}]: not a CA")
        # the JWK's own parameters must be the certificate's key
        jwk_only = {n: v for n, v in k.items() if n not in ("x5c", "use")}
        key_from_jwk = jwt.PyJWK(jwk_only).key
        spki = lambda pub: pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if spki(key_from_jwk) != spki(cert.public_key()):
            fail(f"keys[{i}]: JWK parameters differ from the x5c key")
        x509_subjects.append(cert.subject.rfc4514_string())
    elif use == "jwt-svid":
        if not k.get("kid"):
            fail(f"keys[{i}]: jwt-svid key without kid")
        jwt_kids.append(k["kid"])
    else:
        fail(f"keys[{i}]: unexpected use {use!r}")
jwt_only = [k for k in doc["keys"] if k.get("use") == "jwt-svid"]
if jwt_only:
    s = jwt.PyJWKSet(jwt_only)
    if sorted(k.key_id for k in s.keys) != sorted(jwt_kids):
        fail("PyJWKSet lost keys")
print(json.dumps({"sequence": seq, "refresh_hint": hint, "x509": x509_subjects, "jwt": jwt_kids}))
