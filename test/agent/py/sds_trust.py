"""Independent decoder of the agent's SDS trust resources (Python grpcio and the
Envoy protos compiled by grpc_tools, not protobuf-es), for
test/agent/federation-mtls.test.ts.

usage: sds_trust.py STUB_DIR SOCKET NAME...
FetchSecrets for NAME...; prints one JSON object: {NAME: {...}} where each is
{"kind": "spiffe", "validator": ..., "type_url": ..., "trust_domains": [[td, pem], ...]}
or {"kind": "trusted_ca", "pem": ...}. Exits 1 with the gRPC status on stderr
when the call fails.
"""
import json, sys

stub_dir, sock, names = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, stub_dir)
import grpc  # noqa: E402
from envoy.service.secret.v3 import sds_pb2_grpc  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2 as d  # noqa: E402
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_spiffe_validator_config_pb2 as spiffe  # noqa: E402

TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
stub = sds_pb2_grpc.SecretDiscoveryServiceStub(grpc.insecure_channel("unix:" + sock))
try:
    resp = stub.FetchSecrets(d.DiscoveryRequest(node={"id": "python-sds-trust"}, type_url=TYPE, resource_names=names), timeout=10)
except grpc.RpcError as e:
    print("%s %s" % (e.code().name, e.details()), file=sys.stderr)
    sys.exit(1)
out = {}
for a in resp.resources:
    s = secret_pb2.Secret()
    if not a.Unpack(s):
        sys.exit("not a Secret: %s" % a.type_url)
    vc = s.validation_context
    if vc.HasField("custom_validator_config"):
        cfg = spiffe.SPIFFECertValidatorConfig()
        if not vc.custom_validator_config.typed_config.Unpack(cfg):
            sys.exit("typed_config is %s" % vc.custom_validator_config.typed_config.type_url)
        out[s.name] = {
            "kind": "spiffe",
            "validator": vc.custom_validator_config.name,
            "type_url": vc.custom_validator_config.typed_config.type_url,
            "trust_domains": [[t.name, t.trust_bundle.inline_bytes.decode()] for t in cfg.trust_domains],
        }
    else:
        out[s.name] = {"kind": "trusted_ca", "pem": vc.trusted_ca.inline_bytes.decode()}
print(json.dumps(out))
