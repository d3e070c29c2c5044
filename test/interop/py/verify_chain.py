"""Strict path validation with Python cryptography >= 42 (run with the pyenv python3).

Usage: verify_chain.py ROOTS_PEM CHAIN_PEM SPIFFE_ID
CHAIN_PEM holds the leaf first, then intermediates. Verifies the leaf as a
TLS client certificate and as a TLS server certificate with the CA's
intermediates, then prints the leaf's URI SANs as JSON.
"""
import datetime
import json
import sys

import cryptography
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

roots = x509.load_pem_x509_certificates(open(sys.argv[1], "rb").read())
chain = x509.load_pem_x509_certificates(open(sys.argv[2], "rb").read())
leaf, inter = chain[0], chain[1:]
store = Store(roots)
now = datetime.datetime.now(datetime.timezone.utc)
builder = PolicyBuilder().store(store).time(now)
client = builder.build_client_verifier()
verified = client.verify(leaf, inter)
uris = [str(u) for u in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)]
print(json.dumps({"version": cryptography.__version__, "client_chain_len": len(verified.chain), "uris": uris}))
