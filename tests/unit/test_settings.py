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
