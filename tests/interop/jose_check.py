"""Interop with a standard JOSE library (PyJWT + cryptography), driven by functions/nls/tests/cli.rs.

  jose_check.py verify JWKS_FILE KEY      -> prints the verified claims as JSON
  jose_check.py sign PRIVATE_JWK CLAIMS   -> prints an NLS key signed by PyJWT
"""
import hashlib
import json
import sys

import jwt


def jws_of(key: str) -> str:
    key = key.strip()
    assert key.startswith("NLS-"), "not an NLS key"
    jws, checksum = key[4:-9], key[-8:]
    assert key[-9] == "-", "no checksum separator"
    assert hashlib.sha256(jws.encode()).hexdigest()[:8] == checksum, "checksum mismatch"
    return jws


def verify(jwks_path: str, key: str) -> None:
    jwks = jwt.PyJWKSet.from_json(open(jwks_path).read())
    jws = jws_of(key)
    kid = jwt.get_unverified_header(jws)["kid"]
    signing_key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(jws, signing_key.key, algorithms=["EdDSA"], audience="nectar", issuer="nls")
    print(json.dumps(claims))


def sign(private_jwk_path: str, claims_json: str) -> None:
    jwk = json.loads(open(private_jwk_path).read())
    key = jwt.PyJWK(jwk).key
    headers = {"kid": jwk["kid"], "typ": "nls-license+jwt"}
    jws = jwt.encode(json.loads(claims_json), key, algorithm="EdDSA", headers=headers)
    print("NLS-" + jws + "-" + hashlib.sha256(jws.encode()).hexdigest()[:8])


if __name__ == "__main__":
    {"verify": verify, "sign": sign}[sys.argv[1]](*sys.argv[2:])
