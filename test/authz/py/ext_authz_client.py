"""Envoy ext_authz client written with Python grpcio (not grpc-js).

Usage: ext_authz_client.py STUBS_DIR HOST:PORT

Sends envoy.service.auth.v3.Authorization/Check requests shaped like the
ones Envoy's HTTP and network ext_authz filters send, and prints one JSON
line per step for the test to assert on.
"""
import json
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from envoy.config.core.v3 import address_pb2, base_pb2  # noqa: E402
from envoy.service.auth.v3 import attribute_context_pb2 as ac  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2 as ea  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2_grpc as eag  # noqa: E402


def emit(step, **kw):
    print(json.dumps({"step": step, **kw}), flush=True)


def addr(ip, port):
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def peer(ip, port, principal="", labels=None):
    return ac.AttributeContext.Peer(address=addr(ip, port), principal=principal, labels=labels or {})


SLEEP = "spiffe://cluster.local/ns/bar/sa/sleep"
HTTPBIN = "spiffe://cluster.local/ns/foo/sa/httpbin"


def http_check(method, path, principal=SLEEP, headers=None, header_map=None, host="httpbin.foo:8000", labels=None, ext=None):
    http = ac.AttributeContext.HttpRequest(method=method, path=path, host=host, scheme="http", protocol="HTTP/1.1", headers=headers or {})
    if header_map is not None:
        http.header_map.CopyFrom(base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in header_map]))
    return ea.CheckRequest(attributes=ac.AttributeContext(
        source=peer("10.1.2.3", 51234, principal),
        destination=peer("10.0.0.5", 8000, HTTPBIN, {"app": "httpbin"} if labels is None else labels),
        request=ac.AttributeContext.Request(http=http),
        context_extensions=ext or {},
    ))


def tcp_check(principal, port, labels):
    return ea.CheckRequest(attributes=ac.AttributeContext(
        source=peer("10.1.4.7", 40000, principal),
        destination=peer("10.0.0.9", port, HTTPBIN, labels),
        tls_session=ac.AttributeContext.TLSSession(sni="outbound_.5432_._.db.foo.svc.cluster.local"),
    ))


def summary(resp):
    out = {"code": resp.status.code, "kind": resp.WhichOneof("http_response")}
    if out["kind"] == "denied_response":
        d = resp.denied_response
        out["http_status"] = d.status.code
        out["headers"] = {h.header.key: h.header.value for h in d.headers}
        out["body"] = d.body
    return out


def main():
    channel = grpc.insecure_channel(sys.argv[2])
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = eag.AuthorizationStub(channel)

    emit("allow_http", **summary(stub.Check(http_check("GET", "/status/200?x=1"), timeout=5)))
    emit("deny_admin", **summary(stub.Check(http_check("GET", "/status/%2e%2e/admin"), timeout=5)))
    emit("deny_default", **summary(stub.Check(http_check("POST", "/status/200"), timeout=5)))
    emit("principal_without_scheme", **summary(stub.Check(http_check("GET", "/ip", principal="cluster.local/ns/bar/sa/sleep"), timeout=5)))
    emit("plaintext", **summary(stub.Check(http_check("GET", "/ip", principal=""), timeout=5)))
    # raw headers: the same header twice stays two values (the ALLOW needs every reading to match)
    emit("repeated_header", **summary(stub.Check(http_check("GET", "/headers", header_map=[(":method", "GET"), ("x-team", "blue"), ("x-team", "red")]), timeout=5)))
    emit("single_header", **summary(stub.Check(http_check("GET", "/headers", header_map=[("x-team", "blue")]), timeout=5)))
    emit("tcp_allow", **summary(stub.Check(tcp_check("spiffe://cluster.local/ns/foo/sa/orders", 5432, {"app": "db"}), timeout=5)))
    emit("tcp_deny", **summary(stub.Check(tcp_check(SLEEP, 5432, {"app": "db"}), timeout=5)))
    emit("context_extension_namespace", **summary(stub.Check(http_check("GET", "/", labels={}, ext={"castellan.namespace": "bar"}), timeout=5)))
    nons = http_check("GET", "/")
    nons.attributes.destination.principal = ""
    emit("no_namespace", **summary(stub.Check(nons, timeout=5)))

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(stub.Check, http_check("GET", "/status/%d" % i), timeout=10) for i in range(300)]
        codes = sorted({f.result().status.code for f in futures})
    emit("burst", codes=codes, count=len(futures))
    channel.close()
    emit("done")


if __name__ == "__main__":
    main()
