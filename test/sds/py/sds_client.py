"""SDS interop client (Python grpcio, not grpc-js) driven by test/sds/python-interop.test.ts.

usage: sds_client.py STUB_DIR SOCKET WORK_DIR
Prints one JSON object per line: {"step": ..., ...}. When it prints
{"step": "wait_rotate"} it reads one line from stdin before continuing.
Exits non-zero on any protocol violation (with the reason on stderr).
"""
import json, os, queue, socket, ssl, sys, threading

stub_dir, sock, work = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, stub_dir)
import grpc  # noqa: E402
from envoy.service.secret.v3 import sds_pb2_grpc  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2 as d  # noqa: E402
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2  # noqa: E402
from google.rpc import status_pb2  # noqa: E402

TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def out(**kw):
    print(json.dumps(kw), flush=True)


def fail(msg):
    print(msg, file=sys.stderr, flush=True)
    sys.exit(1)


def secrets(resp_resources):
    got = {}
    for a in resp_resources:
        if a.type_url != TYPE:
            fail("resource type_url %r" % a.type_url)
        s = secret_pb2.Secret()
        a.Unpack(s)
        got[s.name] = s
    return got


class Stream:
    """A bidi stream fed from a queue; responses land in another queue."""

    def __init__(self, method):
        self.reqs = queue.Queue()
        self.resps = queue.Queue()
        self.call = method(iter(self.reqs.get, None))
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for r in self.call:
                self.resps.put(r)
        except grpc.RpcError as e:
            self.resps.put(e)

    def send(self, req):
        self.reqs.put(req)

    def recv(self, timeout=10.0):
        try:
            r = self.resps.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(r, grpc.RpcError):
            fail("stream failed: %s %s" % (r.code(), r.details()))
        return r

    def close(self):
        self.reqs.put(None)
        self.call.cancel()


ch = grpc.insecure_channel("unix:" + sock)
stub = sds_pb2_grpc.SecretDiscoveryServiceStub(ch)
node = {"id": "sidecar~10.0.0.1~python-interop~default.svc.cluster.local", "cluster": "interop"}

# --- StreamSecrets ---
s = Stream(stub.StreamSecrets)
s.send(d.DiscoveryRequest(node=node, type_url=TYPE, resource_names=["default"]))
r1 = s.recv()
if r1 is None or r1.type_url != TYPE:
    fail("no initial response or wrong type_url")
g1 = secrets(r1.resources)
out(step="initial", names=sorted(g1), version=r1.version_info, nonce=r1.nonce)

# ACK that also adds ROOTCA: must be answered (new name).
s.send(d.DiscoveryRequest(type_url=TYPE, resource_names=["default", "ROOTCA"], version_info=r1.version_info, response_nonce=r1.nonce))
r2 = s.recv()
if r2 is None:
    fail("no response after adding ROOTCA")
g2 = secrets(r2.resources)
out(step="added", names=sorted(g2), version=r2.version_info, nonce_differs=r2.nonce != r1.nonce)

# NACK of r2: the stream stays, the same version is not sent again.
s.send(d.DiscoveryRequest(type_url=TYPE, resource_names=["default", "ROOTCA"], version_info=r1.version_info, response_nonce=r2.nonce,
                          error_detail=status_pb2.Status(code=3, message="python client rejects this on purpose")))
# A stale nonce with a new (invalid) subscription is ignored too.
s.send(d.DiscoveryRequest(type_url=TYPE, resource_names=["default"], response_nonce="not-a-nonce-we-got"))
r_none = s.recv(timeout=1.5)
out(step="nack", resent=r_none is not None)

# Push after rotation.
out(step="wait_rotate")
sys.stdin.readline()
r3 = s.recv(timeout=15)
if r3 is None:
    fail("no push after rotation")
g3 = secrets(r3.resources)
out(step="pushed", names=sorted(g3), version_changed=r3.version_info != r2.version_info,
    chain_changed=g3["default"].tls_certificate.certificate_chain.inline_bytes != g2["default"].tls_certificate.certificate_chain.inline_bytes)
s.send(d.DiscoveryRequest(type_url=TYPE, resource_names=["default", "ROOTCA"], version_info=r3.version_info, response_nonce=r3.nonce))
latest = g3
s.close()

# --- FetchSecrets ---
f = stub.FetchSecrets(d.DiscoveryRequest(node=node, type_url=TYPE, resource_names=["ROOTCA", "default"]), timeout=10)
fg = secrets(f.resources)
out(step="fetch", names=sorted(fg), type_url=f.type_url)
try:
    stub.FetchSecrets(d.DiscoveryRequest(node=node, type_url=TYPE, resource_names=["spiffe://cluster.local/ns/x/sa/y"]), timeout=10)
    out(step="fetch_unknown", code="OK")
except grpc.RpcError as e:
    out(step="fetch_unknown", code=e.code().name, details=e.details())
try:
    stub.FetchSecrets(d.DiscoveryRequest(type_url=TYPE, resource_names=["default"]), timeout=10)
    out(step="fetch_no_node", code="OK")
except grpc.RpcError as e:
    out(step="fetch_no_node", code=e.code().name)

# --- DeltaSecrets ---
ds = Stream(stub.DeltaSecrets)
ds.send(d.DeltaDiscoveryRequest(node=node, type_url=TYPE, resource_names_subscribe=["default", "ROOTCA"]))
dr = ds.recv()
if dr is None:
    fail("no delta response")
versions = {x.name: x.version for x in dr.resources}
for x in dr.resources:
    if x.resource.type_url != TYPE:
        fail("delta resource type_url %r" % x.resource.type_url)
out(step="delta", names=sorted(versions), versions_nonempty=all(versions.values()), system_version=bool(dr.system_version_info))
ds.send(d.DeltaDiscoveryRequest(type_url=TYPE, response_nonce=dr.nonce))
out(step="delta_ack", extra=ds.recv(timeout=1.0) is not None)
ds.close()
# A reconnecting client that already holds both versions gets nothing.
ds2 = Stream(stub.DeltaSecrets)
ds2.send(d.DeltaDiscoveryRequest(node=node, type_url=TYPE, initial_resource_versions=versions))
out(step="delta_initial_versions", sent=ds2.recv(timeout=1.5) is not None)
# ...until it subscribes afresh after unsubscribing.
ds2.send(d.DeltaDiscoveryRequest(type_url=TYPE, resource_names_unsubscribe=["ROOTCA"]))
ds2.send(d.DeltaDiscoveryRequest(type_url=TYPE, resource_names_subscribe=["ROOTCA"]))
again = ds2.recv(timeout=5)
out(step="delta_resubscribe", names=sorted(x.name for x in again.resources) if again else [])
ds2.close()

# --- TLS with the received material against a peer with another identity ---
tls = latest["default"].tls_certificate
with open(os.path.join(work, "sds-key.pem"), "wb") as fh:
    fh.write(tls.private_key.inline_bytes)
with open(os.path.join(work, "sds-chain.pem"), "wb") as fh:
    fh.write(tls.certificate_chain.inline_bytes)
with open(os.path.join(work, "sds-root.pem"), "wb") as fh:
    fh.write(latest["ROOTCA"].validation_context.trusted_ca.inline_bytes)

from cryptography import x509  # noqa: E402


def spiffe_id(der):
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        fail("peer has %d URI SANs" % len(uris))
    return uris[0]


srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
srv_ctx.load_cert_chain(os.path.join(work, "sds-chain.pem"), os.path.join(work, "sds-key.pem"))
srv_ctx.load_verify_locations(os.path.join(work, "sds-root.pem"))
srv_ctx.verify_mode = ssl.CERT_REQUIRED
cli_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
cli_ctx.check_hostname = False  # identity is the SPIFFE ID, checked below
cli_ctx.load_cert_chain(os.path.join(work, "peer-chain.pem"), os.path.join(work, "peer-key.pem"))
cli_ctx.load_verify_locations(os.path.join(work, "peer-root.pem"))
a, b = socket.socketpair()
result = {}


def serve():
    with srv_ctx.wrap_socket(a, server_side=True) as t:
        result["client_id"] = spiffe_id(t.getpeercert(binary_form=True))
        t.sendall(b"hi\n")


th = threading.Thread(target=serve)
th.start()
with cli_ctx.wrap_socket(b) as c:
    result["server_id"] = spiffe_id(c.getpeercert(binary_form=True))
    result["version"] = c.version()
    result["reply"] = c.recv(16).decode()
th.join()
out(step="tls", **result)
out(step="done")
