"""Mints session tokens with PyJWT, an implementation independent of the
edge's, for edge/tests/sessions.rs.

Reads {"claims": {...}, "hs256_secret": "..."} on stdin; makes a fresh RSA,
P-256 and Ed25519 key; prints {"pems": {alg: public PEM}, "jwks": {"keys":
[...]}, "tokens": {alg: token}, "kid_tokens": {alg: token with a kid}}.
"""

import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

req = json.load(sys.stdin)
claims = req["claims"]
keys = {
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}
algorithm_class = {
    "RS256": jwt.algorithms.RSAAlgorithm,
    "ES256": jwt.algorithms.ECAlgorithm,
    "EdDSA": jwt.algorithms.OKPAlgorithm,
}
out = {"pems": {}, "jwks": {"keys": []}, "tokens": {}, "kid_tokens": {}}
for alg, key in keys.items():
    public = key.public_key()
    out["pems"][alg] = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    jwk = json.loads(algorithm_class[alg].to_jwk(public))
    jwk["kid"] = "py-" + alg
    jwk["use"] = "sig"
    out["jwks"]["keys"].append(jwk)
    out["tokens"][alg] = jwt.encode(claims, key, algorithm=alg)
    out["kid_tokens"][alg] = jwt.encode(
        claims, key, algorithm=alg, headers={"kid": "py-" + alg}
    )
out["tokens"]["HS256"] = jwt.encode(claims, req["hs256_secret"], algorithm="HS256")
json.dump(out, sys.stdout)
