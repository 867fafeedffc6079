"""Kafka security settings: incomplete SASL config is refused at start-up, and every client gets the options."""

import pytest
from pydantic import ValidationError

from sitewatch.settings import Settings
from streams.pipeline import faust_credentials


def test_plaintext_by_default_adds_nothing():
    s = Settings()
    assert s.kafka_options() == {} and faust_credentials(s) is None


def test_sasl_without_credentials_is_refused():
    with pytest.raises(ValidationError, match="SW_KAFKA_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL")


def test_sasl_ssl_options_for_clients_and_faust():
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_username="worker", kafka_password="s3cret",
                 kafka_sasl_mechanism="SCRAM-SHA-512")
    opts = s.kafka_options()
    assert opts["security_protocol"] == "SASL_SSL"
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "worker", "s3cret")
    assert opts["ssl_context"] is not None
    creds = faust_credentials(s)
    assert (creds.username, creds.password) == ("worker", "s3cret")
    assert creds.ssl_context is not None and creds.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret" not in repr(s), "the password never shows up in logs of the settings"


def test_kafka_python_accepts_the_options():
    from kafka import KafkaProducer

    opts = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_username="u", kafka_password="p").kafka_options()
    assert set(opts) <= set(KafkaProducer.DEFAULT_CONFIG), "every key must be a kafka-python config name"


# ------------------------------------------------------------------- every protocol, every client form agree
@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_faust_form_and_client_options_say_the_same(protocol, mechanism):
    """The worker (Faust -> aiokafka) and the bridge/sink (kafka_options) must log in the same way: Faust's own
    translation of our credentials gives the same protocol, mechanism, user and TLS context use."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = Settings(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism, kafka_username="worker",
                 kafka_password="s3cret")
    opts = s.kafka_options()
    faust_opts = credentials_to_aiokafka_auth(faust_credentials(s))
    assert faust_opts["security_protocol"] == opts["security_protocol"] == protocol
    for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert faust_opts.get(key) == opts.get(key), key
    assert (faust_opts.get("ssl_context") is not None) == ("SSL" in protocol) == ("ssl_context" in opts)
    if protocol == "SSL":
        assert "sasl_mechanism" not in opts, "SSL without SASL sends no SASL settings"


def test_aiokafka_accepts_the_options():
    import inspect

    # aiokafka's own classes: the worker swaps ``aiokafka.AIOKafkaConsumer`` for its low-latency subclass (which
    # takes ``**kwargs``) when an earlier test built the Faust app, so the package attribute may not be aiokafka's
    from aiokafka.consumer.consumer import AIOKafkaConsumer
    from aiokafka.producer.producer import AIOKafkaProducer

    opts = Settings(kafka_security_protocol="SASL_SSL", kafka_username="u", kafka_password="p").kafka_options()
    for cls in (AIOKafkaProducer, AIOKafkaConsumer):
        assert set(opts) <= set(inspect.signature(cls).parameters), f"{cls.__name__} rejects {set(opts)}"


def test_tls_context_verifies_the_broker_against_the_configured_ca(tmp_path):
    """The generated TLS context really authenticates the broker: a certificate from SW_KAFKA_CAFILE's CA is
    accepted for the broker's address, one from another CA is refused, and so is a wrong host name."""
    import socket
    import ssl
    import threading

    from tests.security.certs import make_pki

    ours, other = make_pki(tmp_path / "ours"), make_pki(tmp_path / "other", ca_name="Someone else's CA")

    def handshake(server_pki, cafile, server_hostname="127.0.0.1") -> None:
        srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv_ctx.load_cert_chain(server_pki.cert, server_pki.key)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]

            def serve():
                conn, _ = listener.accept()
                try:
                    with srv_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                except (ssl.SSLError, OSError):
                    pass

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            ctx = Settings(kafka_security_protocol="SSL", kafka_cafile=cafile).kafka_options()["ssl_context"]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname=server_hostname):
                        pass
            finally:
                t.join(5)

    handshake(ours, ours.ca)  # accepted
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(other, ours.ca)  # a broker certificate from another CA
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ours, None)  # no CA configured: the system store does not know the private CA
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ours, ours.ca, server_hostname="kafka.example.com")  # right CA, wrong broker name
