"""The agent's configuration: one TOML file, validated into :class:`AgentConfig` (msgspec).

The credentials file and the device profile are applied first; then each table ([mqtt],
[input], [sink], [engine], ...) is validated on its own, and the top-level keys apart from the
tables. Each that fails gives one line (``mqtt.url: must look like ...``, ``engine.threads:
Expected `int` >= 1``): msgspec stops at a table's first error, so a table with two bad keys
shows one of them, but two bad tables show both. Cross-field rules (``__post_init__``) of the
whole config are checked once every table and key is valid.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from agent.capture.config import CaptureConfig
from agent.config_types import ConfigStruct, HttpUrl, MqttUrl, Secret, dec_hook
from agent.errors import AgentConfigError
from agent.plugin_config import (
    FolderInputConfig,
    InputConfig,
    PostprocessConfig,
    SinkConfig,
)
from agent.probation import ProbationConfig
from edgefleet.contract.common import DeviceId
from edgefleet.structs import TableErrors, convert_tables
from edgefleet.tls_files import TlsError, TlsFiles, check_pem_file
from firmware_configs.profile import (
    BackendsField,
    BatchSizeField,
    CpuMemArenaField,
    ExecutionProvidersField,
    GraphOptimizationField,
    MemPatternField,
    default_execution_providers,
)

__all__ = [
    "AgentConfig",
    "CaptureConfig",
    "EngineConfig",
    "FolderInputConfig",
    "InputConfig",
    "MqttConfig",
    "OutboxConfig",
    "PostprocessConfig",
    "ProbationConfig",
    "SinkConfig",
    "TelemetryConfig",
    "config_from_data",
    "load_config",
    "parse_config",
]

#: A config file larger than this is refused unread.
MAX_CONFIG_BYTES = 1024 * 1024
#: A token file larger than this is refused (a bearer token is a few hundred bytes).
MAX_TOKEN_BYTES = 16 * 1024


class MqttConfig(ConfigStruct, frozen=True, kw_only=True):
    """How the agent reaches the broker."""

    url: Annotated[
        MqttUrl, Meta(description="Broker URL: mqtt://host[:port] or mqtts://host[:port].")
    ]
    username: Annotated[str | None, Meta(description="Broker user name, if required.")] = None
    password: Annotated[
        Secret | None,
        Meta(description="Broker password; default (when username is set): the device token."),
    ] = None
    ca_file: Annotated[
        Path | None,
        Meta(
            description="CA bundle (PEM) that signed an mqtts:// broker's certificate; default "
            "the system's trust store. The certificate and host name are always verified."
        ),
    ] = None
    cert_file: Annotated[
        Path | None,
        Meta(
            description="This device's client certificate (PEM), for a broker that requires "
            "one; needs key_file."
        ),
    ] = None
    key_file: Annotated[
        Path | None, Meta(description="The private key (PEM, unencrypted) of cert_file.")
    ] = None
    keepalive: Annotated[int, Meta(ge=5, le=3600, description="MQTT keepalive in seconds.")] = 30
    connect_wait_s: Annotated[
        float,
        Meta(
            ge=0,
            le=600,
            description="How long start-up waits for the broker before serving without it.",
        ),
    ] = 10.0

    def __post_init__(self) -> None:
        files = (self.ca_file, self.cert_file, self.key_file)
        if not any(files):
            return
        try:
            for name, path in zip(("ca_file", "cert_file", "key_file"), files, strict=True):
                if path is not None:
                    check_pem_file(path, name)
        except TlsError as err:
            raise ValueError(str(err)) from err
        if urlsplit(self.url).scheme != "mqtts":
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// url")
        from edgefleet.mqtt_tls import client_context  # imports ssl: only with TLS files

        try:  # loads them as the transport will: a key that does not match fails here
            client_context(TlsFiles(*(str(path) if path is not None else None for path in files)))
        except TlsError as err:
            raise ValueError(str(err)) from err


class TelemetryConfig(ConfigStruct, frozen=True, kw_only=True):
    interval_s: Annotated[
        float, Meta(ge=0.1, le=86_400, description="Seconds summarised per telemetry message.")
    ] = 5.0


class ArtifactsConfig(ConfigStruct, frozen=True, kw_only=True):
    """What the artifact store keeps (a profile's ``budgets.keep_artifacts`` and ``disk_mb``)."""

    keep: Annotated[
        int,
        Meta(
            ge=1,
            le=10,
            description="Unpacked versions kept on disk: the serving one, the previous one (for "
            "rollback) and the newest others up to this count.",
        ),
    ] = 2
    disk_mb: (
        Annotated[
            float,
            Meta(
                ge=1,
                le=10_000_000,
                description="MiB the kept artifacts and a download in progress may take (a "
                "profile's disk_mb less its queues); a bundle that cannot fit beside the serving "
                "model is refused, older versions are deleted to stay under. Unset: no limit.",
            ),
        ]
        | None
    ) = None


class OutboxConfig(ConfigStruct, frozen=True, kw_only=True):
    """Store-and-forward of telemetry, events and state (see agent.forwarder)."""

    max_mb: Annotated[
        float,
        Meta(
            gt=0,
            le=1_000_000,
            description="Disk budget of the offline queue in MiB (a profile's offline_queue_mb); "
            "over it the oldest telemetry is dropped first.",
        ),
    ] = 64.0
    rate_per_s: Annotated[
        float, Meta(gt=0, le=10_000, description="Most messages sent per second when draining.")
    ] = 50.0
    batch: Annotated[
        int,
        Meta(
            ge=1,
            le=1000,
            description="Messages sent before waiting for the broker to acknowledge them all.",
        ),
    ] = 20

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


class EngineConfig(ConfigStruct, frozen=True, kw_only=True):
    threads: Annotated[int, Meta(ge=1, le=64, description="Intra-op threads per model.")] = 1
    queue_size: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="Inputs waiting for inference (live sources drop the oldest when full).",
        ),
    ] = 8
    graph_optimization: GraphOptimizationField = "all"
    execution_providers: ExecutionProvidersField = msgspec.field(
        default_factory=default_execution_providers
    )
    cpu_mem_arena: CpuMemArenaField = True
    mem_pattern: MemPatternField = True
    batch_size: BatchSizeField = 1
    backends: BackendsField = msgspec.field(default_factory=lambda: ["onnx", "tflite"])
    memory_mb: (
        Annotated[
            float,
            Meta(
                ge=32,
                le=1_000_000,
                description="RSS in MiB the agent stays under with its models loaded (a "
                "profile's budgets.memory_mb): a model that cannot fit beside the one serving "
                "is refused, by its file size before loading and by its measured RSS after "
                "(agent.memory). Unset: no limit.",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.batch_size > self.queue_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed queue_size ({self.queue_size}): "
                "a batch is made of queued inputs"
            )


class AgentConfig(ConfigStruct, frozen=True, kw_only=True):
    """Everything one device needs to run. Built from TOML by :func:`config_from_data`, which
    first fills in the credentials file and the profile (``msgspec.convert`` alone does not)."""

    device_id: Annotated[DeviceId, Meta(description="This device's id (one MQTT topic level).")]
    server_url: Annotated[
        HttpUrl, Meta(description="Fleet server base URL, used for bundle downloads.")
    ]
    token: Annotated[Secret | None, Meta(description="Device bearer token.")] = None
    token_file: Annotated[Path | None, Meta(description="File holding the device token.")] = None
    credentials_file: Annotated[
        Path | None,
        Meta(
            description="JSON written by `edgefleet agent enroll`: fills device_id, server_url, "
            "token and the MQTT login where this file sets none."
        ),
    ] = None
    data_dir: Annotated[
        Path, Meta(description="Artifacts, sequence numbers and the model pointer.")
    ]
    device_class: (
        Annotated[
            str, Meta(max_length=64, description="Hardware class reported in state, e.g. 'pi4'.")
        ]
        | None
    ) = None
    trusted_keys: Annotated[
        list[Path],
        Meta(description="Ed25519 public keys (PEM); when set, only signed manifests are served."),
    ] = msgspec.field(default_factory=list)
    max_bundle_bytes: Annotated[
        int, Meta(ge=1, description="Largest bundle the agent downloads.")
    ] = 512 * 1024 * 1024
    download_retry_s: Annotated[
        float,
        Meta(
            ge=0,
            le=86400,
            description="How long a bundle download keeps resuming after transient failures "
            "(lost link, server restart) before the update fails; 0: one attempt.",
        ),
    ] = 900.0
    download_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="Seconds a bundle download waits for the server's next bytes before "
            "it counts the connection as lost and resumes on a new one.",
        ),
    ] = 30.0
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Meta(description="Minimum level of the JSON log lines on stderr."),
    ] = "info"
    profile: Annotated[
        str | None,
        Meta(
            description="Device profile (built-in name like 'rpi4', or a .toml path) whose "
            "engine, input and telemetry values are the defaults for what this file does not set."
        ),
    ] = None
    mqtt: Annotated[MqttConfig, Meta(description="Broker connection.")]
    input: Annotated[InputConfig | None, Meta(description="Where inputs come from.")] = None
    sink: Annotated[
        SinkConfig | None, Meta(description="Where results go (none: results are only counted).")
    ] = None
    postprocess: Annotated[
        PostprocessConfig | None,
        Meta(description="How outputs become results (default: by the model's task)."),
    ] = None
    telemetry: Annotated[TelemetryConfig, Meta(description="Telemetry.")] = msgspec.field(
        default_factory=TelemetryConfig
    )
    engine: Annotated[EngineConfig, Meta(description="Inference engine.")] = msgspec.field(
        default_factory=EngineConfig
    )
    probation: Annotated[
        ProbationConfig, Meta(description="Health gate before committing a new model.")
    ] = msgspec.field(default_factory=ProbationConfig)
    outbox: Annotated[OutboxConfig, Meta(description="Offline queue for outgoing messages.")] = (
        msgspec.field(default_factory=OutboxConfig)
    )
    artifacts: Annotated[
        ArtifactsConfig, Meta(description="How many model versions stay on disk, in how much.")
    ] = msgspec.field(default_factory=ArtifactsConfig)
    capture: Annotated[
        CaptureConfig,
        Meta(
            description="Input statistics and hard-example capture; tightens the server's policy."
        ),
    ] = msgspec.field(default_factory=CaptureConfig)

    def __post_init__(self) -> None:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("set exactly one of token and token_file")

    def bearer_token(self) -> str:
        """The device token, read from ``token_file`` each time (so it can be rotated)."""
        if self.token is not None:
            return self.token.get_secret_value()
        assert self.token_file is not None  # guaranteed by __post_init__
        return read_token_file(self.token_file)


def config_from_data(data: dict[str, Any]) -> AgentConfig:
    """Parsed TOML as an AgentConfig: the credentials file and then the profile fill in what
    the file does not set, then :func:`edgefleet.structs.convert_tables` validates it.
    AgentConfigError with one ``path: message`` line per bad table (and for the top-level keys).
    """
    try:
        if isinstance(data.get("credentials_file"), str):
            from agent.credentials import apply_credentials

            data = apply_credentials(data, Path(data["credentials_file"]))
        if isinstance(data.get("profile"), str):
            data = apply_profile(data, data["profile"])
    except ValueError as err:
        raise AgentConfigError(str(err)) from err
    try:
        return convert_tables(data, AgentConfig, dec_hook=dec_hook)
    except TableErrors as err:
        raise AgentConfigError(str(err)) from err


def apply_profile(data: dict[str, Any], name_or_path: str) -> dict[str, Any]:
    """The raw config with the profile's values filled in where the file sets none."""
    from firmware_configs.profile import ProfileError, load_profile

    try:
        profile = load_profile(name_or_path)
    except ProfileError as err:
        raise ValueError(f"profile: {err}") from err
    data = dict(data)
    # The class the server sees in state names the profile, so it knows which artifact
    # formats this device runs (fleet_server.services.compat); an enrolled class wins.
    data.setdefault("device_class", profile.name)
    engine = profile.engine
    _defaults(
        data,
        "engine",
        threads=engine.threads,
        graph_optimization=engine.graph_optimization,
        execution_providers=list(engine.execution_providers),
        cpu_mem_arena=engine.cpu_mem_arena,
        mem_pattern=engine.mem_pattern,
        batch_size=engine.batch_size,
        backends=list(engine.backends),
        queue_size=profile.input.queue_size,
        memory_mb=profile.budgets.memory_mb,
    )
    _defaults(data, "telemetry", interval_s=profile.telemetry.interval_s)
    _defaults(data, "outbox", max_mb=profile.budgets.offline_queue_mb)
    # Captured samples share the disk budget with the outbox: half its size again.
    _defaults(data, "capture", queue_mb=profile.budgets.offline_queue_mb / 2)
    # Artifacts and downloads get the rest of the disk budget (outbox + capture: 1.5 queues).
    budgets = profile.budgets
    _defaults(
        data,
        "artifacts",
        keep=budgets.keep_artifacts,
        disk_mb=max(16.0, budgets.disk_mb - 1.5 * budgets.offline_queue_mb),
    )
    source = data.get("input")
    if isinstance(source, dict) and source.get("type") == "camera":
        defaults = profile.input
        _defaults(data, "input", width=defaults.width, height=defaults.height, fps=defaults.fps)
    return data


def _defaults(data: dict[str, Any], table: str, **values: Any) -> None:
    """Fill ``values`` into ``data[table]`` where it sets none (a table that is not a TOML table
    is left alone, for validation to report)."""
    current = data.get(table, {})
    if isinstance(current, dict):
        data[table] = {**values, **current}


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


def parse_config(text: str, *, source: str = "config") -> AgentConfig:
    """Validate TOML text; AgentConfigError with one ``source: path: message`` line per bad
    table (msgspec reports a table's first error), plus one for the top-level keys."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise AgentConfigError(f"{source}: not valid TOML: {err}") from err
    try:
        config = config_from_data(data)
    except AgentConfigError as err:
        lines = "\n".join(f"{source}: {line}" for line in str(err).splitlines())
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
