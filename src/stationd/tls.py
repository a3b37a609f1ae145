"""TLS for the https listeners: certificates, server options, reload.

The node terminates TLS itself (no proxy in front of a field station), so it
makes its own self-signed pair on first start and can reload certificates on
SIGHUP without dropping connections.
"""

import datetime
import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import ssl
from OpenSSL.crypto import X509
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

_VALIDITY = datetime.timedelta(days=3650)


def default_hosts():
    """Names a self-signed node certificate is valid for."""
    return ["localhost", socket.gethostname(), "127.0.0.1", "::1"]


def _general_name(host):
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_certificate(hosts, issuer=None, is_ca=False):
    """A new (key, certificate), self-signed or signed by ``issuer`` = (key, cert).

    RSA 2048 because old station clients (Python 2, old OpenSSL) must connect.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    issuer_key, issuer_cert = issuer or (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = (
            builder.add_extension(
                x509.SubjectAlternativeName([_general_name(h) for h in dict.fromkeys(hosts)]),
                critical=False,
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=True, key_cert_sign=False,
                    crl_sign=False, content_commitment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
    return key, builder.sign(issuer_key, hashes.SHA256())


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_pair(key, cert, cert_path, key_path):
    os.makedirs(os.path.dirname(cert_path) or ".", exist_ok=True)
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)


def fingerprint(cert):
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def ensure_self_signed(tls_dir):
    """Paths of the node's self-signed pair under ``tls_dir``, made if missing."""
    cert_path = os.path.join(tls_dir, "cert.pem")
    key_path = os.path.join(tls_dir, "key.pem")
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        key, cert = make_certificate(default_hosts())
        write_pair(key, cert, cert_path, key_path)
        log.info(
            "Generated a self-signed TLS certificate {path}, SHA-256 fingerprint {fp}",
            path=cert_path, fp=fingerprint(cert),
        )
    return cert_path, key_path


def _load_certificates(path, what):
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load {what} {path}: {e}") from None


def _spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


_MIN_VERSION = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# TLS 1.2 suites: ECDHE key exchange (forward secrecy) with an AEAD cipher (AES-GCM,
# ChaCha20-Poly1305) only; no static-RSA key exchange, no CBC (LUCKY13), no DHE.  (Twisted's
# default also offers RSA+AES and CBC suites.)  TLS 1.3 suites are OpenSSL's own, all AEAD:
# OpenSSL sets them apart from this list.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
_CIPHERS = ssl.AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS)


def server_options(cert_path, key_path, min_version="TLSv1.2", client_ca=None):
    """CertificateOptions for a listener; raises ValueError naming the bad file."""
    chain = _load_certificates(cert_path, "certificate")
    try:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot load private key {key_path}: {e}") from None
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise ValueError(f"private key {key_path} does not match certificate {cert_path}")
    trust = None
    if client_ca is not None:
        cas = _load_certificates(client_ca, "client CA")
        trust = ssl.trustRootFromCertificates([ssl.Certificate(X509.from_cryptography(c)) for c in cas])
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:],
        raiseMinimumTo=_MIN_VERSION[min_version],
        trustRoot=trust,
        acceptableCiphers=_CIPHERS,
    )


def tls_error_key(config):
    """The [web] key a certificate that will not load is reported under."""
    return "tls_cert" if config["web"]["tls_cert"] else "https"


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The TLS policy of every https listener, swappable while they run.

    Each new connection uses the options current at its handshake; connections
    already open keep theirs.
    """

    def __init__(self, web_config, data_dir):
        self._data_dir = data_dir
        self.use(web_config, self.load(web_config))

    def _paths(self, web):
        if web["tls_cert"]:
            return web["tls_cert"], web["tls_key"]
        return ensure_self_signed(os.path.join(self._data_dir, "tls"))

    def load(self, web_config):
        """The options ``web_config``'s files make; ValueError (naming the file) if they do not."""
        cert_path, key_path = self._paths(web_config)
        try:
            return server_options(cert_path, key_path, web_config["tls_min_version"], web_config["client_ca"])
        except OSError as e:
            raise ValueError(f"cannot read {e.filename}: {e.strerror}") from None

    def use(self, web_config, options):
        """Handshakes from now on use ``options`` (from load(web_config)); open connections keep theirs."""
        self.cert_path = self._paths(web_config)[0]
        self.options = options

    @classmethod
    def from_config(cls, config):
        try:
            return cls(config["web"], config["node"]["data_dir"])
        except ValueError as e:
            raise config.error("web", tls_error_key(config), str(e)) from None

    def serverConnectionForTLS(self, protocol):
        return self.options.serverConnectionForTLS(protocol)

