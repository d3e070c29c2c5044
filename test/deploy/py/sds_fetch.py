"""One SDS FetchSecrets over a Unix socket (Python grpcio), for test/deploy/image.test.ts.

usage: sds_fetch.py STUB_DIR SOCKET
Prints one JSON object: the secret names, the workload chain and the root
(PEM), and whether a private key came with the chain. Exits non-zero on error.
"""
import json, sys

stub_dir, sock = sys.argv[1], sys.argv[2]
sys.path.insert(0, stub_dir)
import grpc  # noqa: E402
from envoy.service.secret.v3 import sds_pb2_grpc  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2 as d  # noqa: E402
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2  # noqa: E402

TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

with grpc.insecure_channel("unix:" + sock) as ch:
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(ch)
    node = {"id": "sidecar~10.0.0.1~image-test~default.svc.cluster.local", "cluster": "image-test"}
    resp = stub.FetchSecrets(d.DiscoveryRequest(node=node, type_url=TYPE, resource_names=["default", "ROOTCA"]), timeout=20)

got = {}
for a in resp.resources:
    s = secret_pb2.Secret()
    a.Unpack(s)
    got[s.name] = s
tls = got["default"].tls_certificate
print(json.dumps({
    "names": sorted(got),
    "chain": tls.certificate_chain.inline_bytes.decode(),
    "has_key": b"PRIVATE KEY" in tls.private_key.inline_bytes,
    "root": got["ROOTCA"].validation_context.trusted_ca.inline_bytes.decode(),
}))
