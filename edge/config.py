"""One configuration file per machine (YAML), validated with errors that name the key.

```yaml
stream_id: press-07
device_name: Press 7
source: {type: modbus, host: 10.0.0.5, port: 502, timeout_s: 1.0}
poll_interval_ms: 100          # how often the source is read
frame_period_ms: 1000          # how much time one frame covers
buffer: {path: ./press-07.buffer.sqlite, max_mb: 512}
sensors:
  - {id: pressure, type: pressure, unit: bar, register: holding, address: 0,
     data_type: float32, word_order: big, byte_order: big, scale: 1.0, offset: 0.0, unit_id: 1}
```
Sources: ``modbus`` (TCP), ``csv`` (replay of a file with a ``timestamp`` column in seconds
or ISO time and one column per sensor, at ``speed`` times real time, 0 as fast as possible).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.messages import SensorSpec, StreamRegistration
from schemas.subjects import STREAM_ID_PATTERN

DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
REGISTERS_OF: dict[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1,
}  # fmt: skip


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SensorConfig(Strict):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[^\s,=]+$")
    name: str = ""
    type: str = "generic"
    unit: str = ""
    register_type: Literal["holding", "input", "coil", "discrete"] = Field(
        default="holding", alias="register"
    )
    address: int = Field(default=0, ge=0, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    data_type: DataType = "uint16"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    column: str | None = Field(default=None, description="csv: column name (default: the id).")
    node_id: str | None = Field(default=None, description="opcua: e.g. ns=2;s=Press.Pressure")
    browse_path: list[str] | None = Field(
        default=None, description='opcua: from Objects, e.g. ["2:Press", "2:Pressure"].'
    )
    topic: str | None = Field(default=None, description="mqtt: the topic carrying this sensor.")
    json_key: str = Field(default="value", description="mqtt: key of the value in a JSON object.")
    metric: str | None = Field(default=None, description="sparkplug: the metric's name.")

    @model_validator(mode="after")
    def _bits(self) -> SensorConfig:
        if self.register_type in ("coil", "discrete") and self.data_type != "bool":
            raise ValueError(f"{self.register_type} registers hold bits: data_type must be bool")
        return self


class ModbusSource(Strict):
    type: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0)
    max_gap: int = Field(
        default=8, ge=0, description="Registers between two reads merged into one."
    )


class OpcUaSecurity(Strict):
    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "None"
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = Field(default=None, description="The client's certificate.")
    private_key: Path | None = Field(default=None, description="The certificate's key.")
    application_uri: str | None = Field(
        default=None,
        description="The client's application URI; must equal the URI in its certificate "
        "(default: asyncua's, urn:example.org:FreeOpcUa:opcua-asyncio).",
    )
    username: str | None = None
    password: str | None = None

    @model_validator(mode="after")
    def _files(self) -> OpcUaSecurity:
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"policy {self.policy} needs certificate and private_key files")
        return self


class OpcUaSource(Strict):
    type: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://")
    mode: Literal["subscribe", "poll"] = Field(
        default="subscribe", description="Monitored items, or reading every poll_interval_ms."
    )
    sampling_interval_ms: float = Field(default=50, ge=0)
    queue_size: int = Field(default=100, ge=0)
    deadband: float = Field(default=0.0, ge=0, description="Absolute deadband of data changes.")
    watchdog_s: float = Field(
        default=10.0, gt=0, description="A subscription silent this long is recreated."
    )
    timeout_s: float = Field(default=4.0, gt=0)
    security: OpcUaSecurity = OpcUaSecurity()


class SparkplugConfig(Strict):
    group: str = Field(min_length=1)
    edge_node: str = Field(min_length=1)
    device: str | None = Field(default=None, description="Only this device's DBIRTH/DDATA.")


class MqttSource(Strict):
    type: Literal["mqtt"]
    sparkplug: SparkplugConfig | None = Field(
        default=None, description="Read Sparkplug B metrics instead of JSON topics."
    )
    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    qos: int = Field(default=1, ge=0, le=2)


class CsvSource(Strict):
    type: Literal["csv", "parquet"]
    path: Path
    speed: float = Field(default=1.0, ge=0)
    loop: bool = False


class BufferConfig(Strict):
    path: Path
    max_mb: float = Field(default=512, gt=0)


class MachineConfig(Strict):
    stream_id: Annotated[str, Field(pattern=STREAM_ID_PATTERN)]
    device_name: str = ""
    source: Annotated[
        ModbusSource | OpcUaSource | MqttSource | CsvSource, Field(discriminator="type")
    ]
    poll_interval_ms: float = Field(default=100, gt=0)
    frame_period_ms: float = Field(default=1000, gt=0)
    buffer: BufferConfig
    sensors: list[SensorConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> MachineConfig:
        ids = [s.id for s in self.sensors]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sensor ids repeat: {', '.join(dupes)}")
        if isinstance(self.source, MqttSource):
            field = "metric" if self.source.sparkplug else "topic"
            missing = [s.id for s in self.sensors if not getattr(s, field)]
            if missing:
                raise ValueError(f"mqtt sensors need a {field}: {', '.join(missing)}")
        if isinstance(self.source, OpcUaSource):
            missing = [s.id for s in self.sensors if not s.node_id and not s.browse_path]
            if missing:
                raise ValueError(f"opcua sensors need node_id or browse_path: {', '.join(missing)}")
        return self

    def registration(self) -> StreamRegistration:
        return StreamRegistration(
            device_name=self.device_name or self.stream_id,
            stream_id=self.stream_id,
            sensors=[
                SensorSpec(id=s.id, name=s.name or s.id, type=s.type, unit=s.unit,
                           rate_hz=1000.0 / self.poll_interval_ms)
                for s in self.sensors
            ],
        )  # fmt: skip


def load(path: Path) -> MachineConfig:
    """Read and validate a machine file; :class:`ConfigError` names the key that is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top")
    try:
        config = MachineConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise ConfigError(f"{path}: {key}: {err['msg']}") from exc
    if not config.buffer.path.is_absolute():
        config = config.model_copy(
            update={
                "buffer": config.buffer.model_copy(
                    update={"path": path.parent / config.buffer.path}
                )
            }
        )
    if isinstance(config.source, OpcUaSource) and config.source.security.policy != "None":
        security = config.source.security
        files = {}
        for key in ("certificate", "private_key"):
            file = getattr(security, key)
            file = file if file.is_absolute() else path.parent / file
            if not file.is_file():
                raise ConfigError(f"{path}: source.security.{key}: no such file: {file}")
            files[key] = file
        config = config.model_copy(
            update={
                "source": config.source.model_copy(
                    update={"security": security.model_copy(update=files)}
                )
            }
        )
    if isinstance(config.source, CsvSource) and not config.source.path.is_absolute():
        config = config.model_copy(
            update={
                "source": config.source.model_copy(
                    update={"path": path.parent / config.source.path}
                )
            }
        )
    return config
