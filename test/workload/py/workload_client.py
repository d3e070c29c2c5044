"""An independent SPIFFE Workload API client (Python grpcio, stubs generated
from proto/spiffe/workload/workload.proto at test time) driving the
agent's Workload API over its Unix socket. One JSON line per step on stdout;
waits for a line on stdin where the test must act (rotate, taint).

usage: workload_client.py STUBS SOCKET WORKDIR [--jwt]
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
import jwt as pyjwt  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509.oid import ExtensionOID  # noqa: E402

import workload_pb2 as pb  # noqa: E402
import workload_pb2_grpc as pbg  # noqa: E402

SOCKET, WORK = sys.argv[2], sys.argv[3]
HDR = (("workload.spiffe.io", "true"),)


def out(step, **kw):
    print(json.dumps({"step": step, **kw}), flush=True)


def wait(step):
    out(step)
    line = sys.stdin.readline().strip()
    return line


def split_der(blob):
    """Concatenated DER certificates -> list of DER (SEQUENCE tag, definite length)."""
    certs, i = [], 0
    while i < len(blob):
        assert blob[i] == 0x30, "not a DER SEQUENCE"
        n = blob[i + 1]
        if n < 0x80:
            length, hdr = n, 2
        else:
            k = n & 0x7F
            length, hdr = int.from_bytes(blob[i + 2:i + 2 + k], "big"), 2 + k
        certs.append(blob[i:i + hdr + length])
        i += hdr + length
    return certs


def pem(ders):
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


def code_of(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def describe_serial(svid):
    return format(x509.load_der_x509_certificate(split_der(svid.x509_svid)[0]).serial_number, "x")


def describe_svid(svid, prefix):
    chain = split_der(svid.x509_svid)
    leaf = x509.load_der_x509_certificate(chain[0])
    key = serialization.load_der_private_key(svid.x509_svid_key, password=None)
    pub = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
    uris = [u.value for u in leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            if isinstance(u, x509.UniformResourceIdentifier)]
    bundle = split_der(svid.bundle)
    with open(f"{WORK}/{prefix}-chain.pem", "wb") as f:
        f.write(pem(chain))
    with open(f"{WORK}/{prefix}-leaf.pem", "wb") as f:
        f.write(pem(chain[:1]))
    with open(f"{WORK}/{prefix}-bundle.pem", "wb") as f:
        f.write(pem(bundle))
    return {
        "spiffe_id": svid.spiffe_id,
        "uris": uris,
        "serial": format(leaf.serial_number, "x"),
        "chain_len": len(chain),
        "bundle_len": len(bundle),
        "key_matches": pub(key.public_key()) == pub(leaf.public_key()),
        "key_type": type(key).__name__,
    }


def main():
    ch = grpc.insecure_channel("unix:" + SOCKET)
    stub = pbg.SpiffeWorkloadAPIStub(ch)

    # Missing or wrong security header: INVALID_ARGUMENT on every method.
    out("no_header",
        x509=code_of(lambda: next(stub.FetchX509SVID(pb.X509SVIDRequest(), timeout=10))),
        bundles=code_of(lambda: next(stub.FetchX509Bundles(pb.X509BundlesRequest(), timeout=10))),
        jwt=code_of(lambda: stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["a"]), timeout=10)),
        jwt_bundles=code_of(lambda: next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), timeout=10))),
        validate=code_of(lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="a", svid="x"), timeout=10)),
        wrong_value=code_of(lambda: next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=(("workload.spiffe.io", "TRUE"),), timeout=10))))

    # X.509: the first response, then a rotation on the same stream.
    stream = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HDR)
    first = next(stream)
    out("x509", svids=len(first.svids), federated=len(first.federated_bundles), crl=len(first.crl), **describe_svid(first.svids[0], "first"))
    wait("wait_rotate")
    # The CA rotated (a new root prepared, then activated) and the agent re-issued: every change
    # arrives on this same stream, each response complete; read until the leaf is a new one.
    pushes, first_serial = 0, describe_serial(first.svids[0])
    while True:
        second = next(stream)
        pushes += 1
        if describe_serial(second.svids[0]) != first_serial:
            break
    out("rotated", pushes=pushes, **describe_svid(second.svids[0], "second"))
    stream.cancel()

    b = next(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=HDR))
    out("x509_bundles", keys=sorted(b.bundles.keys()), certs=[len(split_der(v)) for v in b.bundles.values()])

    # A client that goes away mid-stream.
    s2 = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HDR)
    next(s2)
    wait("opened")
    s2.cancel()
    wait("cancelled")
    if "--jwt" not in sys.argv[4:]:
        ch.close()
        return

    # JWT-SVIDs: fetch, verify with PyJWT against the JWKS from FetchJWTBundles.
    bundles_stream = stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HDR)
    jb = next(bundles_stream)
    td, jwks = next(iter(jb.bundles.items()))
    jwks = json.loads(jwks)
    r = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["spiffe://cluster.local/ns/default/sa/backend"]), metadata=HDR)
    tok = r.svids[0].svid
    hdr = pyjwt.get_unverified_header(tok)
    key = pyjwt.PyJWKSet.from_dict(jwks)[hdr["kid"]]
    claims = pyjwt.decode(tok, key=key.key, algorithms=[hdr["alg"]], audience="spiffe://cluster.local/ns/default/sa/backend",
                          options={"require": ["exp", "aud", "sub", "iat"]})
    wrong_aud = "OK"
    try:
        pyjwt.decode(tok, key=key.key, algorithms=[hdr["alg"]], audience="other")
    except pyjwt.InvalidAudienceError:
        wrong_aud = "InvalidAudienceError"
    again = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["spiffe://cluster.local/ns/default/sa/backend"]), metadata=HDR).svids[0].svid
    out("jwt", trust_domain=td, uses=[k.get("use") for k in jwks["keys"]], kids=[k.get("kid") for k in jwks["keys"]],
        header=hdr, sub=claims["sub"], aud=claims["aud"], life=claims["exp"] - claims["iat"], spiffe_id=r.svids[0].spiffe_id,
        pyjwt_wrong_aud=wrong_aud, cached=(again == tok),
        no_audience=code_of(lambda: stub.FetchJWTSVID(pb.JWTSVIDRequest(), metadata=HDR)),
        empty_audience=code_of(lambda: stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=[""]), metadata=HDR)),
        other_id=code_of(lambda: stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://cluster.local/ns/default/sa/other"), metadata=HDR)))

    v = stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="spiffe://cluster.local/ns/default/sa/backend", svid=tok), metadata=HDR)
    out("validate", spiffe_id=v.spiffe_id, claims=json_format.MessageToDict(v.claims),
        wrong_aud=code_of(lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="other", svid=tok), metadata=HDR)),
        garbage=code_of(lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="a", svid="a.b.c"), metadata=HDR)),
        no_svid=code_of(lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="a"), metadata=HDR)))

    # JWT key rotation: the open FetchJWTBundles stream gets the new key set.
    wait("wait_jwt_rotate")
    jb2 = next(bundles_stream)
    jwks2 = json.loads(jb2.bundles[td])
    out("jwt_rotated", kids=[k.get("kid") for k in jwks2["keys"]])
    # After taint: the old token (signed before taint) still validates; the test checks forged ones.
    line = wait("wait_taint")
    forged = json.loads(line)["forged"] if line else ""
    out("tainted",
        old_token=code_of(lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="spiffe://cluster.local/ns/default/sa/backend", svid=tok), metadata=HDR)),
        forged=code_of(lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="aud", svid=forged), metadata=HDR)))
    bundles_stream.cancel()
    ch.close()


main()
