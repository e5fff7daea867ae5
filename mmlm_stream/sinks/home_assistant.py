"""Home Assistant MQTT discovery: the retained configs that make each stream a device.

Per source, one device (``mmlm_<source>``) with a binary sensor per condition key (person,
alarm, each watch query; any other key when it first turns on), a sensor with the latest
description, a sensor with the stream's state, an event entity that fires on every event,
and (with snapshots on) a camera entity showing the latest event's snapshot. Every entity's
availability is the sink's last will (``<prefix>/available``), so Home Assistant shows them
unavailable when the sink is gone. Topics follow
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (ids: ``[A-Za-z0-9_-]``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mmlm_stream import __version__
from mmlm_stream.records.schema import EVENT_TYPES

ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_DEVICE_CLASSES = {
    "person": "occupancy",
    "people": "occupancy",
    "car": "motion",
    "vehicle": "motion",
    "alarm": "sound",
    "siren": "sound",
    "loud": "sound",
    "ring": "sound",
    "doorbell": "sound",
    "beep": "sound",
    "smoke": "smoke",
}


def object_id(text: str) -> str:
    """``text`` as a discovery id: anything but letters, digits, ``_`` and ``-`` becomes ``_``."""
    return _UNSAFE.sub("_", text) or "_"


@dataclass(frozen=True)
class Topics:
    """Where a source's values live (``<prefix>/<source>/...``)."""

    prefix: str

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    def of(self, source: str, leaf: str) -> str:
        return f"{self.prefix}/{topic_level(source)}/{leaf}"

    def key(self, source: str, key: str) -> str:
        """A condition's retained ON/OFF; keys that would hide a fixed leaf get a ``key_``."""
        leaf = topic_level(key)
        if leaf in RESERVED_LEAVES:
            leaf = f"key_{leaf}"
        return self.of(source, leaf)


RESERVED_LEAVES = frozenset({"event", "state", "description", "snapshot", "available"})


def topic_level(text: str) -> str:
    """One topic level: MQTT's wildcards and separators (``+ # /``) and NUL replaced."""
    return re.sub(r"[+#/\x00]", "_", text) or "_"


@dataclass(frozen=True)
class Discovery:
    """Builds the discovery messages of a source (topic, JSON payload) for one sink."""

    topics: Topics
    discovery_prefix: str = "homeassistant"
    sink_name: str = "mqtt"
    camera: bool = False
    """A camera entity showing the latest event's snapshot (when snapshots are on)."""

    def _config_topic(self, component: str, source: str, what: str) -> str:
        return (
            f"{self.discovery_prefix}/{component}/mmlm_{object_id(source)}/{object_id(what)}/config"
        )

    def _common(self, source: str, what: str, name: str) -> dict[str, Any]:
        version = __version__
        return {
            "name": name,
            "unique_id": f"mmlm_{object_id(source)}_{object_id(what)}",
            "availability": [{"topic": self.topics.available}],
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": {
                "identifiers": [f"mmlm_{object_id(source)}"],
                "name": source,
                "manufacturer": "mmlm-stream",
                "model": "video stream",
                "sw_version": version,
            },
            "origin": {"name": "mmlm-stream", "sw_version": version},
        }

    def condition(self, source: str, key: str) -> tuple[str, str]:
        payload = self._common(source, f"key_{key}", key.replace("_", " ").capitalize()) | {
            "state_topic": self.topics.key(source, key),
            "payload_on": ON,
            "payload_off": OFF,
        }
        if key in _DEVICE_CLASSES:
            payload["device_class"] = _DEVICE_CLASSES[key]
        return self._config_topic("binary_sensor", source, f"key_{key}"), json.dumps(payload)

    def device(self, source: str) -> list[tuple[str, str]]:
        """The entities every source has, whatever its conditions."""
        description = self._common(source, "description", "Description") | {
            "state_topic": self.topics.of(source, "description"),
            "value_template": "{{ value[:255] }}",
            "icon": "mdi:text-box-outline",
        }
        state = self._common(source, "state", "Stream") | {
            "state_topic": self.topics.of(source, "state"),
            "value_template": "{{ value_json.state }}",
            "json_attributes_topic": self.topics.of(source, "state"),
            "icon": "mdi:cctv",
        }
        event = self._common(source, "events", "Events") | {
            "state_topic": self.topics.of(source, "event"),
            "event_types": sorted(EVENT_TYPES),
            "value_template": '{{ {"event_type": value_json.type, "key": value_json.key, '
            '"description": value_json.description} | to_json }}',
        }
        configs = [
            (self._config_topic("sensor", source, "description"), json.dumps(description)),
            (self._config_topic("sensor", source, "state"), json.dumps(state)),
            (self._config_topic("event", source, "events"), json.dumps(event)),
        ]
        if self.camera:
            camera = self._common(source, "snapshot", "Last event") | {
                "topic": self.topics.of(source, "snapshot"),
            }
            configs.append((self._config_topic("camera", source, "snapshot"), json.dumps(camera)))
        return configs
