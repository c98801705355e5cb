"""How every Kafka client authenticates to the brokers and encrypts its connections.

One function turns the environment into the keyword arguments kafka-python's producer, consumer and
admin client all take; `settings.KAFKA["SECURITY"]` holds its result and `core/kafka/client.py`
passes it to every client it builds. The process manager (`exchange.stack`), which runs without
Django, calls it directly.

Each process authenticates as its own principal (its own `KAFKA_SASL_USERNAME`), so that the broker's
ACLs can say who may write which topic: see docs/operations.md, *Kafka access*.
"""

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# The SASL mechanisms that need nothing but a user name and a password.
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_SASL_SETTINGS = ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
_TRUE = {"1", "true", "yes", "on"}


def connection_options(environ: Mapping[str, str], *, production: bool) -> dict[str, object]:
    """kafka-python keyword arguments for `KAFKA_SECURITY_PROTOCOL` and its companions.

    Production runs only over SASL_SSL (authenticated and encrypted) unless `KAFKA_ALLOW_INSECURE`
    says that the brokers' network is trusted: without authentication anyone who reaches a broker
    can write engine events or orders, and without TLS a SASL password or the orders travel in clear.
    A setting that does not make sense stops the process at start.
    """
    protocol = environ.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
    if protocol not in PROTOCOLS:
        raise ImproperlyConfigured(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    insecure_allowed = environ.get("KAFKA_ALLOW_INSECURE", "").strip().lower() in _TRUE
    if production and protocol != "SASL_SSL" and not insecure_allowed:
        raise ImproperlyConfigured(
            f"KAFKA_SECURITY_PROTOCOL={protocol} is refused in production: use SASL_SSL, or set "
            "KAFKA_ALLOW_INSECURE=true if the brokers' network is trusted"
        )
    options: dict[str, object] = {"security_protocol": protocol}

    if protocol.startswith("SASL_"):
        mechanism = environ.get("KAFKA_SASL_MECHANISM", "").strip().upper() or MECHANISMS[0]
        if mechanism not in MECHANISMS:
            choices = ", ".join(MECHANISMS)
            raise ImproperlyConfigured(f"KAFKA_SASL_MECHANISM must be one of {choices}, not {mechanism!r}")
        username, password = environ.get("KAFKA_SASL_USERNAME", ""), environ.get("KAFKA_SASL_PASSWORD", "")
        if not username or not password:
            raise ImproperlyConfigured(f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        options.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    else:
        stray = ", ".join(name for name in _SASL_SETTINGS if environ.get(name))
        if stray:
            raise ImproperlyConfigured(f"{stray} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL")

    cafile = environ.get("KAFKA_SSL_CAFILE", "").strip()
    if protocol.endswith("SSL"):
        # The brokers' certificates are checked against this CA bundle (or the system's), host names included.
        options["ssl_check_hostname"] = True
        if cafile:
            options["ssl_cafile"] = cafile
    elif cafile:
        raise ImproperlyConfigured(f"KAFKA_SSL_CAFILE set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS")
    return options
