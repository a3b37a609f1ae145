import ipaddress

import pytest
from cryptography import x509

from stationd import tls
from stationd.tls import ServerTLS, ensure_self_signed, make_certificate, server_options, write_pair


def test_self_signed_pair_names_the_node_and_is_reused(tmp_path):
    cert_path, key_path = ensure_self_signed(str(tmp_path / "tls"))
    cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", tls.default_hosts()[1]} <= set(san.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= set(
        san.get_values_for_type(x509.IPAddress)
    )
    assert (tmp_path / "tls" / "key.pem").stat().st_mode & 0o077 == 0
    again = ensure_self_signed(str(tmp_path / "tls"))
    assert again == (cert_path, key_path)
    assert open(cert_path, "rb").read() == cert.public_bytes(tls.serialization.Encoding.PEM)


def test_certificates_signed_by_a_ca_chain_up(tmp_path):
    ca_key, ca_cert = make_certificate(["Test CA"], is_ca=True)
    key, cert = make_certificate(["node.example"], issuer=(ca_key, ca_cert))
    assert cert.issuer == ca_cert.subject
    cert.verify_directly_issued_by(ca_cert)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_options_refuse_bad_files(tmp_path):
    key, cert = make_certificate(["a"])
    other_key, _ = make_certificate(["b"])
    write_pair(key, cert, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    write_pair(other_key, cert, str(tmp_path / "cert2.pem"), str(tmp_path / "key2.pem"))
    assert server_options(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    with pytest.raises(ValueError, match="does not match"):
        server_options(str(tmp_path / "cert.pem"), str(tmp_path / "key2.pem"))
    with pytest.raises(ValueError, match="cannot load certificate"):
        server_options(str(tmp_path / "missing.pem"), str(tmp_path / "key.pem"))
    with pytest.raises(ValueError, match="cannot load client CA"):
        server_options(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"),
                       client_ca=str(tmp_path / "key.pem"))


def test_a_broken_certificate_is_refused_before_it_replaces_the_one_in_use(tmp_path, make_config):
    key, cert = make_certificate(["a"])
    write_pair(key, cert, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    config = make_config(f"[web]\ntls_cert = {tmp_path}/cert.pem\ntls_key = {tmp_path}/key.pem\n")
    server = ServerTLS.from_config(config)
    before = server.options
    (tmp_path / "cert.pem").write_text("garbage")
    with pytest.raises(ValueError, match="cannot load certificate"):
        server.load(config["web"])
    assert server.options is before
    new_key, new_cert = make_certificate(["b"])
    write_pair(new_key, new_cert, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    server.use(config["web"], server.load(config["web"]))
    assert server.options is not before
