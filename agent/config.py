"""The agent's configuration: one TOML file, validated into :class:`AgentConfig`.

Errors name every bad field on its own line (``mqtt.url: Field required``) so a device operator
can fix the file in one pass.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.errors import AgentConfigError
from agent.plugin_config import (
    FolderInputConfig,
    InputConfig,
    PostprocessConfig,
    SinkConfig,
)
from agent.probation import ProbationConfig
from edgefleet.contract import DeviceId
from edgefleet.mqtt_tls import TlsError, TlsFiles, check_pem_file, client_context
from firmware_configs.profile import (
    BATCH_SIZE_FIELD,
    CPU_MEM_ARENA_FIELD,
    GRAPH_OPTIMIZATION_FIELD,
    MEM_PATTERN_FIELD,
    GraphOptimization,
    execution_providers_field,
)

__all__ = [
    "AgentConfig",
    "EngineConfig",
    "FolderInputConfig",
    "InputConfig",
    "MqttConfig",
    "OutboxConfig",
    "PostprocessConfig",
    "ProbationConfig",
    "SinkConfig",
    "TelemetryConfig",
    "load_config",
    "parse_config",
]

#: A config file larger than this is refused unread.
MAX_CONFIG_BYTES = 1024 * 1024
#: A token file larger than this is refused (a bearer token is a few hundred bytes).
MAX_TOKEN_BYTES = 16 * 1024


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Config):
    """How the agent reaches the broker."""

    url: str = Field(description="Broker URL: mqtt://host[:port] or mqtts://host[:port].")
    username: str | None = Field(default=None, description="Broker user name, if required.")
    password: SecretStr | None = Field(default=None, description="Broker password, if required.")
    ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that signed an mqtts:// broker's certificate; default the "
        "system's trust store. The certificate and host name are always verified.",
    )
    cert_file: Path | None = Field(
        default=None,
        description="This device's client certificate (PEM), for a broker that requires one; "
        "needs key_file.",
    )
    key_file: Path | None = Field(
        default=None, description="The private key (PEM, unencrypted) of cert_file."
    )
    keepalive: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    connect_wait_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="How long start-up waits for the broker before serving without it.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host[:port] or mqtts://host[:port]")
        try:
            _ = parts.port
        except ValueError as err:
            raise ValueError("has an invalid port") from err
        return value

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _pem(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            try:
                check_pem_file(value, str(info.field_name))
            except TlsError as err:
                raise ValueError(str(err)) from err
        return value

    @model_validator(mode="after")
    def _tls(self) -> MqttConfig:
        files = (self.ca_file, self.cert_file, self.key_file)
        if not any(files):
            return self
        if urlsplit(self.url).scheme != "mqtts":
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// url")
        try:  # loads them as the transport will: a key that does not match fails here
            client_context(TlsFiles(*(str(path) if path is not None else None for path in files)))
        except TlsError as err:
            raise ValueError(str(err)) from err
        return self


class TelemetryConfig(_Config):
    interval_s: float = Field(
        default=5.0, ge=0.1, le=86_400, description="Seconds summarised per telemetry message."
    )


class OutboxConfig(_Config):
    """Store-and-forward of telemetry, events and state (see agent.forwarder)."""

    max_mb: float = Field(
        default=64.0,
        gt=0,
        le=1_000_000,
        description="Disk budget of the offline queue in MiB (a profile's offline_queue_mb); "
        "over it the oldest telemetry is dropped first.",
    )
    rate_per_s: float = Field(
        default=50.0, gt=0, le=10_000, description="Most messages sent per second when draining."
    )
    batch: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Messages sent before waiting for the broker to acknowledge them all.",
    )

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


class EngineConfig(_Config):
    threads: int = Field(default=1, ge=1, le=64, description="Intra-op threads per model.")
    queue_size: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Inputs waiting for inference (live sources drop the oldest when full).",
    )
    graph_optimization: GraphOptimization = GRAPH_OPTIMIZATION_FIELD
    execution_providers: list[str] = execution_providers_field()
    cpu_mem_arena: bool = CPU_MEM_ARENA_FIELD
    mem_pattern: bool = MEM_PATTERN_FIELD
    batch_size: int = BATCH_SIZE_FIELD

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> EngineConfig:
        if self.batch_size > self.queue_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed queue_size ({self.queue_size}): "
                "a batch is made of queued inputs"
            )
        return self


class AgentConfig(_Config):
    """Everything one device needs to run."""

    device_id: DeviceId = Field(description="This device's id (one MQTT topic level).")
    server_url: str = Field(description="Fleet server base URL, used for bundle downloads.")
    token: SecretStr | None = Field(default=None, description="Device bearer token.")
    token_file: Path | None = Field(default=None, description="File holding the device token.")
    credentials_file: Path | None = Field(
        default=None,
        description="JSON written by `edgefleet agent enroll`: fills device_id, server_url, "
        "token and the MQTT login where this file sets none.",
    )
    data_dir: Path = Field(description="Artifacts, sequence numbers and the model pointer.")
    device_class: str | None = Field(
        default=None, max_length=64, description="Hardware class reported in state, e.g. 'pi4'."
    )
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM); when set, only signed manifests are served.",
    )
    max_bundle_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1, description="Largest bundle the agent downloads."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Minimum level of the JSON log lines on stderr."
    )
    profile: str | None = Field(
        default=None,
        description="Device profile (built-in name like 'rpi4', or a .toml path) whose engine, "
        "input and telemetry values are the defaults for what this file does not set.",
    )
    mqtt: MqttConfig = Field(description="Broker connection.")
    input: InputConfig | None = Field(default=None, description="Where inputs come from.")
    sink: SinkConfig | None = Field(
        default=None, description="Where results go (none: results are only counted)."
    )
    postprocess: PostprocessConfig | None = Field(
        default=None, description="How outputs become results (default: by the model's task)."
    )
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="Telemetry.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Inference engine.")
    probation: ProbationConfig = Field(
        default_factory=ProbationConfig, description="Health gate before committing a new model."
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="Offline queue for outgoing messages."
    )

    @model_validator(mode="before")
    @classmethod
    def _credentials(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("credentials_file"), str):
            from agent.credentials import apply_credentials

            return apply_credentials(data, Path(data["credentials_file"]))
        return data

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("profile"), str):
            return apply_profile(data, data["profile"])
        return data

    @field_validator("server_url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_token(self) -> AgentConfig:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("set exactly one of token and token_file")
        return self

    def bearer_token(self) -> str:
        """The device token, read from ``token_file`` each time (so it can be rotated)."""
        if self.token is not None:
            return self.token.get_secret_value()
        assert self.token_file is not None  # guaranteed by _one_token
        return read_token_file(self.token_file)


def apply_profile(data: dict[str, Any], name_or_path: str) -> dict[str, Any]:
    """The raw config with the profile's values filled in where the file sets none."""
    from firmware_configs.profile import ProfileError, load_profile

    try:
        profile = load_profile(name_or_path)
    except ProfileError as err:
        raise ValueError(f"profile: {err}") from err
    data = dict(data)
    engine = dict(data.get("engine") or {})
    engine.setdefault("threads", profile.engine.threads)
    engine.setdefault("graph_optimization", profile.engine.graph_optimization)
    engine.setdefault("execution_providers", list(profile.engine.execution_providers))
    engine.setdefault("cpu_mem_arena", profile.engine.cpu_mem_arena)
    engine.setdefault("mem_pattern", profile.engine.mem_pattern)
    engine.setdefault("batch_size", profile.engine.batch_size)
    engine.setdefault("queue_size", profile.input.queue_size)
    data["engine"] = engine
    telemetry = dict(data.get("telemetry") or {})
    telemetry.setdefault("interval_s", profile.telemetry.interval_s)
    data["telemetry"] = telemetry
    outbox = dict(data.get("outbox") or {})
    outbox.setdefault("max_mb", profile.budgets.offline_queue_mb)
    data["outbox"] = outbox
    source = data.get("input")
    if isinstance(source, dict) and source.get("type") == "camera":
        source = dict(source)
        source.setdefault("width", profile.input.width)
        source.setdefault("height", profile.input.height)
        source.setdefault("fps", profile.input.fps)
        data["input"] = source
    return data


def read_token_file(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TOKEN_BYTES + 1)
    except OSError as err:
        raise AgentConfigError(f"token_file: cannot read {path}: {err.strerror}") from err
    if len(raw) > MAX_TOKEN_BYTES:
        raise AgentConfigError(f"token_file: {path} is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError as err:
        raise AgentConfigError(f"token_file: {path} is not ASCII") from err
    if not token or any(c.isspace() for c in token):
        raise AgentConfigError(f"token_file: {path} must hold one token without spaces")
    return token


def describe_errors(err: ValidationError) -> list[str]:
    """One ``field.path: message`` line per error."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        lines.append(f"{loc}: {item['msg']}")
    return lines


def parse_config(text: str, *, source: str = "config") -> AgentConfig:
    """Validate TOML text; AgentConfigError with one line per bad field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise AgentConfigError(f"{source}: not valid TOML: {err}") from err
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as err:
        lines = "\n".join(f"{source}: {line}" for line in describe_errors(err))
        raise AgentConfigError(lines) from err
    if config.token_file is not None:
        config.bearer_token()
    return config


def load_config(path: Path) -> AgentConfig:
    """Read and validate a TOML config file (at most :data:`MAX_CONFIG_BYTES`)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise AgentConfigError(f"{path}: cannot read: {err.strerror}") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise AgentConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise AgentConfigError(f"{path}: not UTF-8 text") from err
    return parse_config(text, source=str(path))
