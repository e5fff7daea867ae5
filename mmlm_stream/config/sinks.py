"""Section ``sinks``: where events go besides Redis (contract §9), one named entry each.

``sinks: {NAME: {kind: mqtt | webhook, ...}}``. Each sink is a Redis consumer group
(``sink:NAME``) over the stream of all events: it acknowledges an event only after the far
side confirmed it, so a sink that stops resumes where it was, and an event it cannot
deliver goes to the group's dead letters with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainSerializer,
    SecretStr,
    model_validator,
)

from mmlm_stream.config.api import BLANK_TOKEN, PLACEHOLDER_TOKEN, is_blank_secret, is_placeholder
from mmlm_stream.config.section import Section


def _checked_secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value().strip()
    if is_blank_secret(text):
        raise ValueError(BLANK_TOKEN)
    if is_placeholder(text):
        raise ValueError(PLACEHOLDER_TOKEN)
    return SecretStr(text)


Secret = Annotated[
    SecretStr,
    AfterValidator(_checked_secret),
    # The real value in JSON dumps (the config travels to Serve replicas as JSON); repr,
    # str and logs stay masked.
    PlainSerializer(lambda value: value.get_secret_value(), return_type=str, when_used="json"),
]


def read_secret(value: SecretStr | None, path: Path | None, what: str) -> str | None:
    """The secret given inline or in a file (read now); ValueError naming the file."""
    if path is None:
        return value.get_secret_value() if value is not None else None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if is_blank_secret(text):
        raise ValueError(f"{path}: the {what} file is empty")
    return text


class SinkFilter(Section):
    """Which events a sink takes; empty lists take everything."""

    sources: list[str] = Field(default_factory=list, description="Source ids; empty = all.")
    types: list[str] = Field(
        default_factory=list, description="Event types (label, sound, query, ...); empty = all."
    )
    keys: list[str] = Field(
        default_factory=list, description="Event keys (person, alarm, a query's name); empty = all."
    )
    min_confidence: float = Field(0.0, ge=0, le=1, description="Drop events scored below this.")


class SinkDelivery(Section):
    """How hard a sink tries before an event goes to the dead letters."""

    max_attempts: int = Field(
        8, ge=1, description="Attempts at one event before it is dead-lettered with the reason."
    )
    retry_initial_s: float = Field(0.5, gt=0, description="First wait between attempts.")
    retry_max_s: float = Field(30.0, gt=0, description="Longest wait between attempts.")


class MqttSinkConfig(SinkFilter, SinkDelivery):
    """Events, stream states, descriptions and conditions as MQTT topics (QoS 1)."""

    kind: Literal["mqtt"]
    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual with TLS).")
    tls: bool = Field(False, description="Connect with TLS (the system's CAs unless ca_file).")
    ca_file: Path | None = Field(None, description="CA bundle of the broker's certificate.")
    username: str | None = Field(None, description="Broker user name.")
    password: Secret | None = Field(None, description="Broker password (never logged).")
    password_file: Path | None = Field(None, description="File holding the broker password.")
    client_id: str | None = Field(
        None,
        description="MQTT client id; default mmlm-stream-<sink name> (stable, so the "
        "broker keeps the session across restarts).",
    )
    topic_prefix: str = Field(
        "mmlm",
        pattern=r"^[^#+\s]{1,64}$",
        description="First level of every topic: <prefix>/<source>/event, ...",
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of every publish.")
    keepalive_s: int = Field(30, ge=5, description="MQTT keep-alive interval.")
    publish_timeout_s: float = Field(
        10.0, gt=0, description="How long a connected broker may take to confirm a publish."
    )
    windows: bool = Field(
        True, description="Also publish each source's latest description (retained)."
    )
    discovery: bool = Field(True, description="Publish Home Assistant MQTT discovery configs.")
    discovery_prefix: str = Field(
        "homeassistant", pattern=r"^[^#+\s]{1,64}$", description="Home Assistant's prefix."
    )
    conditions: list[str] = Field(
        default_factory=lambda: ["person", "alarm"],
        description="Keys that get a binary sensor per stream from the start (the watch "
        "queries' names are added; any other key gets one when it first turns on).",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSinkConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self

    def secret(self) -> str | None:
        return read_secret(self.password, self.password_file, "MQTT password")


class WebhookSinkConfig(SinkFilter, SinkDelivery):
    """A signed POST of each event's JSON to one URL."""

    kind: Literal["webhook"]
    url: str = Field(
        ...,
        min_length=1,
        description="http(s) URL; passes the API's URL policy "
        "(api.allowed_hosts, api.allow_internal) like stream URLs.",
    )
    secret: Secret | None = Field(
        None, description="HMAC-SHA256 key of the X-Mmlm-Signature header (never logged)."
    )
    secret_file: Path | None = Field(None, description="File holding the HMAC key.")
    timeout_s: float = Field(5.0, gt=0, description="Connect and response timeout of a POST.")
    headers: dict[str, Secret] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. an Authorization (values never logged).",
    )

    @model_validator(mode="after")
    def _one_secret_source(self) -> WebhookSinkConfig:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("set secret or secret_file, not both")
        return self

    def key(self) -> str | None:
        return read_secret(self.secret, self.secret_file, "webhook secret")


SinkConfig = Annotated[MqttSinkConfig | WebhookSinkConfig, Field(discriminator="kind")]
SINK_NAME = r"^[A-Za-z0-9_-]{1,64}$"
