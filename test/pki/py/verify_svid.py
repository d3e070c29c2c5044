"""Strict path validation of an issued chain with Python cryptography >= 42.

usage: verify_svid.py ROOTS_PEM CHAIN_PEM
CHAIN_PEM holds the leaf first, then any intermediates. Prints one JSON line:
{"version", "client": "ok" | error, "client_sans": [...], "server": "ok" | error}.
The server verifier needs a DNS name or an IP to match; an X.509-SVID carries
only a URI SAN, so it is run against a name the leaf cannot hold and the
caller checks that the name is the only complaint.
"""
import json
import sys

import cryptography
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from cryptography.x509.general_name import DNSName

roots = x509.load_pem_x509_certificates(open(sys.argv[1], "rb").read())
chain = x509.load_pem_x509_certificates(open(sys.argv[2], "rb").read())
leaf, intermediates = chain[0], chain[1:]
builder = PolicyBuilder().store(Store(roots))
out = {"version": cryptography.__version__}
try:
    verified = builder.build_client_verifier().verify(leaf, intermediates)
    out["client"] = "ok"
    out["client_sans"] = [getattr(n, "value", str(n)) for n in (verified.subjects or [])]
    out["client_chain_len"] = len(verified.chain)
except Exception as e:  # report the verifier's own words
    out["client"] = f"{type(e).__name__}: {e}"
try:
    builder.build_server_verifier(DNSName("svid.invalid")).verify(leaf, intermediates)
    out["server"] = "ok"
except Exception as e:
    out["server"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
