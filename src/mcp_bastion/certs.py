"""Self-signed TLS certificates for `mcp-bastion init --tls self-signed`. The only module that imports cryptography.

No file I/O: the caller decides where the PEM bytes go (the key with mode 0600).
"""

import datetime
import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A year: short enough that a forgotten certificate expires, long enough not to surprise a small deployment.
VALIDITY_DAYS = 365
# Tolerates a client whose clock runs a little behind the gateway's.
BACKDATE = datetime.timedelta(minutes=5)


def self_signed(names: Iterable[str], *, days: int = VALIDITY_DAYS) -> tuple[bytes, bytes]:
    """A self-signed server certificate valid for `names` (IP addresses and DNS names) and its key, both PEM.

    The certificate is its own trust anchor: clients trust this one file (`curl --cacert`, httpx `verify=`).
    """
    unique = list(dict.fromkeys(name for name in names if name))
    if not unique:
        raise ValueError("a certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, unique[0][:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mcp-bastion"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in unique]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name.lower())
