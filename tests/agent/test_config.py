from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.config import MAX_CONFIG_BYTES, AgentConfig, load_config, parse_config
from agent.errors import AgentConfigError
from edgefleet.structs import members
from tests.utils.structs import undescribed

VALID = """
device_id = "dev-1"
server_url = "http://127.0.0.1:8080/"
token = "secret-token"
data_dir = "/var/lib/edgefleet"

[mqtt]
url = "mqtt://127.0.0.1:1883"
username = "dev-1"
password = "pw"
keepalive = 20

[input]
type = "folder"
path = "/data/in"
pattern = "*.png"
loop = true
rate_hz = 20.0

[telemetry]
interval_s = 5.0

[engine]
threads = 2
"""


def test_valid_config_parses() -> None:
    config = parse_config(VALID)
    assert config.device_id == "dev-1"
    assert config.server_url == "http://127.0.0.1:8080"
    assert config.bearer_token() == "secret-token"
    assert config.mqtt.keepalive == 20
    assert config.mqtt.password is not None and config.mqtt.password.get_secret_value() == "pw"
    assert config.input is not None and config.input.type == "folder"
    assert config.input.path == Path("/data/in") and config.input.loop
    assert config.engine.threads == 2
    assert "secret-token" not in repr(config)


def test_defaults_for_optional_sections() -> None:
    minimal = "\n".join(
        [
            'device_id = "d"',
            'server_url = "https://fleet.example"',
            'token = "t"',
            'data_dir = "/tmp/x"',
            "[mqtt]",
            'url = "mqtts://broker.example"',
        ]
    )
    config = parse_config(minimal)
    assert config.input is None
    assert config.telemetry.interval_s == 5.0
    assert config.engine.threads == 1


def test_every_field_is_described() -> None:
    from agent.config import EngineConfig, MqttConfig, OutboxConfig, TelemetryConfig
    from agent.credentials import Credentials
    from agent.plugin_config import InputConfig, PostprocessConfig, SinkConfig
    from agent.probation import ProbationConfig

    plugins = members(InputConfig | SinkConfig | PostprocessConfig)
    assert len(plugins) == len({p.__struct_config__.tag for p in plugins}) == 13
    models = [AgentConfig, MqttConfig, TelemetryConfig, EngineConfig, OutboxConfig]
    assert undescribed(*models, ProbationConfig, Credentials, *plugins) == []


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('device_id = "dev-1"', 'device_id = "Dev/1"', "device_id"),
        ('device_id = "dev-1"', "", "(root): Object missing required field `device_id`"),
        ('server_url = "http://127.0.0.1:8080/"', 'server_url = "ftp://x"', "server_url"),
        ('url = "mqtt://127.0.0.1:1883"', 'url = "http://127.0.0.1"', "mqtt.url"),
        ('url = "mqtt://127.0.0.1:1883"', 'url = "mqtt://host:99999"', "mqtt.url"),
        ("keepalive = 20", "keepalive = 1", "mqtt.keepalive"),
        ('type = "folder"', 'type = "webcam"', "input.type"),
        ('type = "folder"', "", "input"),
        ("rate_hz = 20.0", "rate_hz = 0", "input.rate_hz"),
        ("rate_hz = 20.0", 'rate_hz = "fast"', "input.rate_hz"),
        ("interval_s = 5.0", "interval_s = -1", "telemetry.interval_s"),
        ("threads = 2", "threads = 0", "engine.threads"),
        ('token = "secret-token"', "", "(root)"),
    ],
)
def test_each_bad_field_is_named(old: str, new: str, field: str) -> None:
    assert old in VALID
    with pytest.raises(AgentConfigError) as info:
        parse_config(VALID.replace(old, new), source="agent.toml")
    lines = str(info.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"agent.toml: {field}"), lines[0]


def test_unknown_plugin_type_lists_the_known_ones() -> None:
    with pytest.raises(AgentConfigError) as info:
        parse_config(VALID.replace('type = "folder"', 'type = "webcam"'), source="agent.toml")
    assert str(info.value) == (
        "agent.toml: input.type: Invalid value 'webcam' "
        "(known types: folder, video, camera, stream, http, batch)"
    )


def test_int_is_accepted_for_float_and_paths_are_decoded() -> None:
    config = parse_config(VALID.replace("rate_hz = 20.0", "rate_hz = 10"))
    assert config.input is not None and config.input.type == "folder"
    assert config.input.rate_hz == 10.0 and isinstance(config.input.rate_hz, float)
    assert isinstance(config.data_dir, Path) and config.data_dir == Path("/var/lib/edgefleet")
    with pytest.raises(AgentConfigError, match="data_dir: Expected a path"):
        parse_config(VALID.replace('data_dir = "/var/lib/edgefleet"', "data_dir = 3"))


def test_list_items_are_named_by_index() -> None:
    with pytest.raises(AgentConfigError, match=r"^config: trusted_keys\[1\]: Expected a path"):
        parse_config('trusted_keys = ["/k.pem", 3]\n' + VALID)
    bad = VALID.replace("threads = 2", 'threads = 2\nexecution_providers = ["CPU", 1]')
    message = r"^config: engine.execution_providers\[1\]: Expected `str`, got `int`$"
    with pytest.raises(AgentConfigError, match=message):
        parse_config(bad)


def test_secrets_stay_out_of_repr_and_str() -> None:
    config = parse_config(VALID)
    for text in (repr(config), str(config), repr(config.mqtt), f"{config.token}"):
        assert "secret-token" not in text and "pw" not in text.replace("password", "")
    assert config.token is not None and config.token.get_secret_value() == "secret-token"
    empty = parse_config(VALID.replace('password = "pw"', 'password = ""')).mqtt.password
    assert empty is not None and not empty  # falsy, as SecretStr was: service sends no password


def test_device_id_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(AgentConfigError, match="device_id: Expected `str` matching regex"):
        parse_config(VALID.replace('device_id = "dev-1"', 'device_id = "dev-1\\n"'))


def test_two_bad_tables_give_two_lines() -> None:
    text = VALID.replace("rate_hz = 20.0", "rate_hz = 0").replace(
        'url = "mqtt://127.0.0.1:1883"', 'url = "http://127.0.0.1"'
    )
    with pytest.raises(AgentConfigError) as info:
        parse_config(text, source="agent.toml")
    assert str(info.value).splitlines() == [
        "agent.toml: mqtt.url: must look like mqtt://host[:port] or mqtts://host[:port]",
        "agent.toml: input.rate_hz: Expected `float` > 0.0",
    ]


def test_bad_top_level_key_and_bad_table_give_two_lines() -> None:
    text = VALID.replace('server_url = "http://127.0.0.1:8080/"', 'server_url = "ftp://x"')
    with pytest.raises(AgentConfigError) as info:
        parse_config(text.replace("threads = 2", "threads = 0"))
    assert str(info.value).splitlines() == [
        "config: server_url: must be an http:// or https:// URL",
        "config: engine.threads: Expected `int` >= 1",
    ]


def test_one_line_per_bad_field() -> None:
    text = VALID.replace("threads = 2", "threads = 0").replace("keepalive = 20", "keepalive = 0")
    with pytest.raises(AgentConfigError) as info:
        parse_config(text)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("engine.threads" in line for line in lines)
    assert any("mqtt.keepalive" in line for line in lines)


@pytest.mark.parametrize(
    ("text", "table", "key"),
    [
        ('surprise = "x"\n' + VALID, "(root)", "surprise"),
        (VALID + '\nsurprise = "x"\n', "engine", "surprise"),  # TOML: still in [engine]
        (VALID.replace("threads = 2", "threads = 2\nturbo = true"), "engine", "turbo"),
        (VALID.replace("keepalive = 20", "keepalive = 20\nqos = 2"), "mqtt", "qos"),
    ],
)
def test_unknown_keys_are_rejected(text: str, table: str, key: str) -> None:
    message = rf"^config: {re.escape(table)}: Object contains unknown field `{key}`$"
    with pytest.raises(AgentConfigError, match=message):
        parse_config(text)


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    text = VALID.replace('token = "secret-token"', f'token_file = "{token_file}"')
    assert parse_config(text).bearer_token() == "abc"
    both = VALID.replace('token = "secret-token"', f'token = "x"\ntoken_file = "{token_file}"')
    with pytest.raises(AgentConfigError, match="exactly one of token and token_file"):
        parse_config(both)


@pytest.mark.parametrize("content", [b"", b"two words", b"\xff\xfe", b"x" * 20_000])
def test_bad_token_file(tmp_path: Path, content: bytes) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(content)
    text = VALID.replace('token = "secret-token"', f'token_file = "{token_file}"')
    with pytest.raises(AgentConfigError, match="token_file"):
        parse_config(text)


def test_missing_token_file(tmp_path: Path) -> None:
    text = VALID.replace('token = "secret-token"', f'token_file = "{tmp_path / "nope"}"')
    with pytest.raises(AgentConfigError, match="token_file: cannot read"):
        parse_config(text)


def test_load_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(VALID)
    assert load_config(path).device_id == "dev-1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"device_id = [unclosed", "not valid TOML"),
        (b"\x00\xff\x80garbage", "not UTF-8"),
        (bytes(range(256)) * 10, "not UTF-8"),
        (b"= = =", "not valid TOML"),
        (b"", r"\(root\): Object missing required field `device_id`"),
    ],
)
def test_garbage_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(content)
    with pytest.raises(AgentConfigError, match=message):
        load_config(path)


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(VALID + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(AgentConfigError, match="larger than"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_example_config_parses(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "agent" / "agent.example.toml"
    token = tmp_path / "token"
    token.write_text("abc")
    text = example.read_text().replace("/etc/edgefleet/token", str(token))
    config = parse_config(text)
    assert config.device_id == "pi-kitchen-01" and config.input is not None


BASE = """
device_id = "dev-1"
server_url = "http://127.0.0.1:8080"
token = "t"
data_dir = "/var/lib/edgefleet"
[mqtt]
url = "mqtt://127.0.0.1:1883"
"""


def test_profile_values_are_defaults_the_file_can_override() -> None:
    config = parse_config('profile = "rpi4"\n' + BASE + '[input]\ntype = "camera"\n')
    assert config.engine.threads == 4 and config.engine.queue_size == 4
    assert config.telemetry.interval_s == 15
    assert config.engine.execution_providers == ["CPUExecutionProvider"]
    camera = config.input
    assert camera is not None and camera.type == "camera"
    assert (camera.width, camera.height, camera.fps) == (640, 480, 15)
    mine = parse_config(
        'profile = "rpi4"\n' + BASE + "[engine]\nthreads = 2\n[telemetry]\ninterval_s = 3\n"
    )
    assert mine.engine.threads == 2 and mine.telemetry.interval_s == 3
    assert mine.engine.queue_size == 4  # still from the profile
    with pytest.raises(AgentConfigError, match=r"^config: engine: Expected `object`, got `int`$"):
        parse_config('profile = "rpi4"\nengine = 3\n' + BASE)  # not a table: no profile values


def test_low_memory_profiles_turn_the_onnxruntime_memory_pattern_off() -> None:
    zero = parse_config('profile = "rpi-zero-2w"\n' + BASE)
    assert (zero.engine.cpu_mem_arena, zero.engine.mem_pattern) == (True, False)
    assert parse_config('profile = "rpi4"\n' + BASE).engine.mem_pattern is True
    assert parse_config(BASE).engine.mem_pattern is True  # no profile: onnxruntime's default
    mine = parse_config('profile = "rpi-zero-2w"\n' + BASE + "[engine]\nmem_pattern = true\n")
    assert mine.engine.mem_pattern is True
    with pytest.raises(AgentConfigError, match="engine.cpu_mem_arena"):
        parse_config(BASE + '[engine]\ncpu_mem_arena = "sometimes"\n')


def test_batch_size_comes_from_the_profile_and_fits_the_queue() -> None:
    assert parse_config(BASE).engine.batch_size == 1
    assert parse_config('profile = "x86_64"\n' + BASE).engine.batch_size == 4
    assert parse_config('profile = "rpi-zero-2w"\n' + BASE).engine.batch_size == 1
    mine = parse_config(BASE + "[engine]\nbatch_size = 8\nqueue_size = 16\n")
    assert (mine.engine.batch_size, mine.engine.queue_size) == (8, 16)
    with pytest.raises(AgentConfigError, match="must not exceed queue_size"):
        parse_config(BASE + "[engine]\nbatch_size = 8\nqueue_size = 4\n")
    with pytest.raises(AgentConfigError, match="engine.batch_size"):
        parse_config(BASE + "[engine]\nbatch_size = 0\n")


def test_outbox_budget_comes_from_the_profile_unless_set() -> None:
    from firmware_configs.profile import load_profile

    budget = load_profile("rpi4").budgets.offline_queue_mb
    config = parse_config('profile = "rpi4"\n' + BASE)
    assert config.outbox.max_bytes == budget * 1024 * 1024
    mine = parse_config('profile = "rpi4"\n' + BASE + "[outbox]\nmax_mb = 2\nrate_per_s = 5\n")
    assert mine.outbox.max_bytes == 2 * 1024 * 1024 and mine.outbox.rate_per_s == 5
    with pytest.raises(AgentConfigError, match="outbox.batch"):
        parse_config(BASE + "[outbox]\nbatch = 0\n")


def test_profile_by_path_and_unknown_profile(tmp_path: Path) -> None:
    from importlib import resources

    text = (resources.files("firmware_configs") / "profiles" / "rpi5.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(text)
    from firmware_configs.profile import load_profile

    config = parse_config(f'profile = "{path}"\n' + BASE)
    assert config.engine.threads == load_profile("rpi5").engine.threads
    with pytest.raises(AgentConfigError) as info:
        parse_config('profile = "pi-99"\n' + BASE)
    assert str(info.value).startswith("config: profile: unknown profile 'pi-99'; built-in: ")
    assert len(str(info.value).splitlines()) == 1


def test_plugin_configs_parse_and_reject_unknown_keys() -> None:
    config = parse_config(
        BASE
        + '[input]\ntype = "http"\nport = 0\n'
        + '[sink]\ntype = "file"\npath = "/tmp/r.jsonl"\n'
        + '[postprocess]\ntype = "detection"\nstyle = "yolov8"\niou_threshold = 0.5\n'
    )
    assert config.input is not None and config.input.type == "http"
    assert config.sink is not None and config.sink.type == "file"
    assert config.postprocess is not None and config.postprocess.type == "detection"
    with pytest.raises(AgentConfigError, match="sink: Object contains unknown field `path`"):
        parse_config(BASE + '[sink]\ntype = "stdout"\npath = "x"\n')
    mqtt = parse_config(BASE + '[sink]\ntype = "mqtt"\nqos = 1\n').sink
    assert mqtt is not None and mqtt.type == "mqtt" and (mqtt.qos, mqtt.max_queued) == (1, 1000)
    with pytest.raises(AgentConfigError, match="sink.qos: Invalid enum value 2"):
        parse_config(BASE + '[sink]\ntype = "mqtt"\nqos = 2\n')
    with pytest.raises(AgentConfigError, match="sink.max_queued: Expected `int` >= 1"):
        parse_config(BASE + '[sink]\ntype = "mqtt"\nmax_queued = 0\n')
    with pytest.raises(AgentConfigError, match="input.url: Expected `str` matching regex"):
        parse_config(BASE + '[input]\ntype = "stream"\nurl = "ftp://x"\n')


def test_mqtt_tls_files_are_validated_at_load(tmp_path: Path) -> None:
    from tests.utils.tls import make_pki

    pki = make_pki()
    try:
        device = pki.client("dev-1")
        tls = VALID.replace('url = "mqtt://127.0.0.1:1883"', 'url = "mqtts://127.0.0.1:8883"')

        def with_files(**files: Path) -> str:
            lines = "".join(f'{name} = "{path}"\n' for name, path in files.items())
            return tls.replace("keepalive = 20\n", f"keepalive = 20\n{lines}")

        config = parse_config(
            with_files(ca_file=pki.ca.cert, cert_file=device.cert, key_file=device.key)
        )
        assert config.mqtt.cert_file == device.cert and config.mqtt.key_file == device.key
        from agent.link import broker_address

        address = broker_address(config)
        assert (address.tls, address.cert_file, address.username) == (
            True,
            str(device.cert),
            "dev-1",
        )

        garbage = tmp_path / "garbage.pem"
        garbage.write_bytes(b"\x00\x01 not pem")
        other = pki.client("other")
        bad = [
            (with_files(ca_file=tmp_path / "missing.pem"), "mqtt: ca_file .*cannot read"),
            (with_files(ca_file=garbage), "mqtt: ca_file .*not a PEM file"),
            (with_files(cert_file=device.cert), "mqtt: .*both cert_file and key_file"),
            (with_files(cert_file=device.cert, key_file=other.key), "mqtt: .*TLS files rejected"),
            (
                VALID.replace("keepalive = 20\n", f'keepalive = 20\nca_file = "{pki.ca.cert}"\n'),
                "mqtt: .*need an mqtts:// url",
            ),  # fmt: skip
            (
                tls.replace("keepalive = 20\n", "keepalive = 20\ntls_insecure = true\n"),
                "mqtt: Object contains unknown field `tls_insecure`",
            ),  # fmt: skip
        ]
        for text, message in bad:
            with pytest.raises(AgentConfigError, match=message):
                parse_config(text)
    finally:
        pki.cleanup()


def test_broker_password_defaults_to_the_device_token(tmp_path: Path) -> None:
    from agent.link import broker_address

    def password(text: str) -> str | None:
        return broker_address(parse_config(text)).password

    without = VALID.replace('password = "pw"\n', "")
    assert password(without) == parse_config(without).bearer_token()
    token_file = tmp_path / "token"
    token_file.write_text("rotated-token\n")
    from_file = without.replace('token = "secret-token"', f'token_file = "{token_file}"')
    assert password(from_file) == token_file.read_text().strip()
    assert password(VALID) == "pw"  # noqa: S105 - an explicit one wins
    assert password(VALID.replace('"pw"', '""')) is None  # an explicit empty one sends none
    anonymous = without.replace('username = "dev-1"\n', "")
    assert broker_address(parse_config(anonymous)).username is None
    assert broker_address(parse_config(anonymous)).password is None


def test_profile_budgets_set_the_artifact_store() -> None:
    zero = parse_config('profile = "rpi-zero-2w"\n' + BASE)
    assert zero.artifacts.keep == 2
    assert zero.artifacts.disk_mb == 512 - 1.5 * 32  # disk_mb less the outbox and capture
    mine = parse_config('profile = "rpi4"\n' + BASE + "[artifacts]\nkeep = 5\n")
    assert mine.artifacts.keep == 5 and mine.artifacts.disk_mb == 4096 - 1.5 * 256
    assert parse_config(BASE).artifacts.disk_mb is None  # no profile: no limit
    for bad in ("keep = 0", "keep = 11", "disk_mb = 0", 'disk_mb = "x"', "limit = 1"):
        with pytest.raises(AgentConfigError):
            parse_config(BASE + f"[artifacts]\n{bad}\n")
