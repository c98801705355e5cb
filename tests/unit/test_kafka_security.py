"""Kafka authentication and TLS settings, from the environment to every client the seam builds.

The local broker speaks neither SASL nor TLS, so these tests check the keyword arguments each client
is built with, and that kafka-python takes them, rather than a SASL handshake; the admin client, which
connects as it is built, shows that they are used: it cannot reach the local broker with them.
"""

import pytest
from django.core.exceptions import ImproperlyConfigured
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from core.kafka import client
from core.kafka.security import connection_options

SASL_SSL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "engine",
    "KAFKA_SASL_PASSWORD": "s3cret",
    "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
}
SECURITY = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "engine",
    "sasl_plain_password": "s3cret",
    "ssl_check_hostname": True,
    "ssl_cafile": "/etc/kafka/ca.pem",
}


def test_with_nothing_set_development_connects_in_plaintext():
    assert connection_options({}, production=False) == {"security_protocol": "PLAINTEXT"}


def test_sasl_over_tls_gives_every_setting_kafka_python_needs():
    assert connection_options(SASL_SSL, production=True) == SECURITY


def test_tls_without_a_ca_file_checks_the_brokers_against_the_systems_certificates():
    options = connection_options({**SASL_SSL, "KAFKA_SSL_CAFILE": ""}, production=True)
    assert "ssl_cafile" not in options
    assert options["ssl_check_hostname"] is True


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT"])
def test_production_refuses_anything_but_sasl_over_tls(protocol):
    environ = {**SASL_SSL, "KAFKA_SECURITY_PROTOCOL": protocol}
    if not protocol.startswith("SASL"):
        environ = {"KAFKA_SECURITY_PROTOCOL": protocol}
    with pytest.raises(ImproperlyConfigured, match="refused in production"):
        connection_options(environ, production=True)


def test_production_takes_plaintext_only_when_told_the_network_is_trusted():
    options = connection_options({"KAFKA_ALLOW_INSECURE": "true"}, production=True)
    assert options == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of"),
        ({**SASL_SSL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM must be one of"),
        ({**SASL_SSL, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_USERNAME": "api"}, "does not use SASL"),
        ({"KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem"}, "does not use TLS"),
    ],
)
def test_a_setting_that_makes_no_sense_stops_the_process(environ, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        connection_options(environ, production=False)


@pytest.fixture
def secured(settings):
    settings.KAFKA = {
        **settings.KAFKA,
        "SECURITY": connection_options(SASL_SSL, production=True),
        "PRODUCER": {**settings.KAFKA["PRODUCER"], "bootstrap_timeout_ms": 500, "request_timeout_ms": 500},
    }
    client.reset_producer()
    yield settings.KAFKA
    client.reset_producer()


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        (client.producer_options, KafkaProducer),
        (lambda: client.consumer_options(auto_offset_reset="earliest"), KafkaConsumer),
        (client.admin_options, KafkaAdminClient),
    ],
    ids=["producer", "consumer", "admin"],
)
def test_every_client_is_built_with_the_security_settings(secured, options, kind):
    built = options()
    assert {name: built.get(name) for name in SECURITY} == SECURITY
    # Every argument is one kafka-python knows, so none is silently dropped or misspelt.
    assert set(built) <= set(kind.DEFAULT_CONFIG)


def test_the_consumer_and_the_producer_hand_them_to_kafka_python(secured, settings):
    # A fixed protocol version keeps kafka-python from connecting while the client is built.
    settings.KAFKA = {**settings.KAFKA, "PRODUCER": {**settings.KAFKA["PRODUCER"], "api_version": (2, 8)}}
    consumer = client.consumer(api_version=(2, 8))
    try:
        assert {name: consumer.config[name] for name in SECURITY} == SECURITY
    finally:
        consumer.close()
    producer = client.producer()
    assert {name: producer.config[name] for name in SECURITY} == SECURITY


@pytest.mark.services
def test_the_admin_client_uses_them_and_so_cannot_talk_to_a_broker_without_sasl(settings):
    client.admin().close()  # the local broker answers a plaintext client
    settings.KAFKA = {
        **settings.KAFKA,
        "SECURITY": connection_options({**SASL_SSL, "KAFKA_SSL_CAFILE": ""}, production=True),
        "PRODUCER": {**settings.KAFKA["PRODUCER"], "bootstrap_timeout_ms": 500, "request_timeout_ms": 500},
    }
    with pytest.raises(KafkaError):
        client.admin().close()
