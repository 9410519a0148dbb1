"""Output for ``edgefleet fleet``: rich tables for people, the server's JSON with ``--json``.

Everything shown comes from the server and is treated as untrusted text: no rich markup is
interpreted, control characters (terminal escapes) are blanked and long values are cut.
When stdout is not a terminal (a pipe, a file) tables become plain tab-separated rows under one
header line, never cut to a width: ``grep``, ``cut -f`` and ``awk -F'\t'`` read them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fleet_server.client.api import JsonObject, one_line

_CELL_CHARS = 60
#: A piped cell is only cut at this length (a bound against a hostile server, not a width).
_PIPED_CELL_CHARS = 4096
_MISSING = "–"

Column = tuple[str, Callable[[JsonObject], Any]]


def plain(value: Any, limit: int = _CELL_CHARS) -> str:
    """A server value as one safe line of text."""
    if value is None or value == "":
        return _MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return one_line(", ".join(plain(v, limit) for v in value), limit) or _MISSING
    if isinstance(value, dict) and {"name", "version"} <= value.keys():
        return one_line(f"{value['name']}@{value['version']}", limit)
    return one_line(str(value), limit)


def when(value: Any) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS' (UTC as the server sends it)."""
    text = plain(value)
    if len(text) >= 19 and text[10:11] == "T":
        return f"{text[:10]} {text[11:19]}"
    return text


def short_hash(value: Any) -> str:
    """The first 12 characters of a digest, as people quote it."""
    return plain(value)[:12] if isinstance(value, str) and value else _MISSING


def _get(row: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(row, dict):
            return None
        row = row.get(key)
    return row


def signature(model: JsonObject) -> str:
    """'verified', 'unverified' (a signature no trusted key of the server verified: rollouts
    refuse it) or 'unsigned'; a server older than signature_status gives only ``signed``."""
    status = model.get("signature_status")
    if status in ("verified", "unverified", "unsigned"):
        return str(status)
    return "signed" if model.get("signed") else "unsigned"


def _size(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return plain(value)
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return plain(value)


DEVICE_COLUMNS: list[Column] = [
    ("ID", lambda d: d.get("device_id")),
    ("CLASS", lambda d: d.get("device_class")),
    ("TAGS", lambda d: d.get("tags")),
    ("ONLINE", lambda d: d.get("online")),
    ("PHASE", lambda d: d.get("phase")),
    ("RUNNING", lambda d: d.get("running")),
    ("DESIRED", lambda d: d.get("desired")),
    ("PINNED", lambda d: d.get("pinned")),
    ("LAST SEEN", lambda d: when(d.get("last_seen"))),
    ("P95 MS", lambda d: _get(d, "last_telemetry", "latency_ms", "p95")),
    ("ERRORS", lambda d: _get(d, "last_telemetry", "error_count")),
    ("LAST ERROR", lambda d: d.get("last_error")),
]

MODEL_COLUMNS: list[Column] = [
    ("NAME", lambda m: m.get("name")),
    ("VERSION", lambda m: m.get("version")),
    ("FORMAT", lambda m: m.get("format")),
    ("PRECISION", lambda m: m.get("precision")),
    ("TASK", lambda m: m.get("task")),
    ("SIZE", lambda m: _size(m.get("size"))),
    ("SIGNATURE", signature),
    ("SHA256", lambda m: short_hash(m.get("sha256"))),
    ("CREATED", lambda m: when(m.get("created_at"))),
]

TOKEN_COLUMNS: list[Column] = [
    ("ID", lambda t: t.get("id")),
    ("NAME", lambda t: t.get("name")),
    ("ROLE", lambda t: t.get("role")),
    ("CREATED", lambda t: when(t.get("created_at"))),
    ("BY", lambda t: t.get("created_by")),
    ("LAST USED", lambda t: when(t.get("last_used_at"))),
    ("REVOKED", lambda t: when(t.get("revoked_at"))),
    ("EXPIRES", lambda t: when(t.get("expires_at"))),
]

ENROLLMENT_COLUMNS: list[Column] = [
    ("ID", lambda t: t.get("id")),
    ("STATE", lambda t: t.get("state")),
    ("USES LEFT", lambda t: f"{t.get('uses_left')}/{t.get('uses')}"),
    ("CLASS", lambda t: t.get("device_class")),
    ("TAGS", lambda t: ",".join(str(x) for x in t.get("tags") or [])),
    ("EXPIRES", lambda t: when(t.get("expires_at"))),
    ("BY", lambda t: t.get("created_by")),
    ("REVOKED", lambda t: when(t.get("revoked_at"))),
]


def _number(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else ""


DRIFT_COLUMNS: list[Column] = [
    ("MODEL", lambda d: f"{d.get('model')}@{d.get('version')}"),
    ("DETECTOR", lambda d: d.get("detector")),
    ("STATUS", lambda d: d.get("status")),
    ("VALUE", lambda d: _number(d.get("value"))),
    ("THRESHOLD", lambda d: _number(d.get("threshold"))),
    ("SAMPLES", lambda d: f"{d.get('samples')} (ref {d.get('reference_samples')})"),
    ("SINCE", lambda d: when(d.get("since"))),
    ("DETAIL", lambda d: d.get("detail")),
]

ALERT_COLUMNS: list[Column] = [
    ("ID", lambda a: a.get("id")),
    ("MODEL", lambda a: f"{a.get('model')}@{a.get('version')}"),
    ("DETECTOR", lambda a: a.get("detector")),
    ("VALUE", lambda a: _number(a.get("value"))),
    ("OPENED", lambda a: when(a.get("opened_at"))),
    ("CLOSED", lambda a: when(a.get("closed_at"))),
    ("RETRAINING", lambda a: f"{a.get('trigger_status')} {a.get('trigger_detail') or ''}".strip()),
]

AUDIT_COLUMNS: list[Column] = [
    ("ID", lambda a: a.get("id")),
    ("TIME", lambda a: when(a.get("ts"))),
    ("ACTOR", lambda a: a.get("actor")),
    ("ROLE", lambda a: a.get("role")),
    ("METHOD", lambda a: a.get("method")),
    ("PATH", lambda a: a.get("path")),
    ("STATUS", lambda a: a.get("status_code")),
    ("TARGET", lambda a: a.get("target")),
]

LINEAGE_COLUMNS: list[Column] = [
    ("VERSION", lambda e: e.get("version")),
    ("PARENT", lambda e: e.get("parent_version")),
    ("DATASET", lambda e: short_hash(e.get("dataset_sha256"))),
    ("TRAINING REF", lambda e: e.get("training_ref")),
    ("REPORT", lambda e: e.get("has_converter_report")),
    ("CREATED", lambda e: when(e.get("created_at"))),
]

TELEMETRY_COLUMNS: list[Column] = [
    ("SEQ", lambda t: t.get("seq")),
    ("TS", lambda t: when(t.get("ts"))),
    ("RECEIVED", lambda t: when(t.get("received_at"))),
    ("MODEL", lambda t: t.get("model")),
    ("INFERENCES", lambda t: t.get("inference_count")),
    ("ERRORS", lambda t: t.get("error_count")),
    ("P50 MS", lambda t: _get(t, "latency_ms", "p50")),
    ("P95 MS", lambda t: _get(t, "latency_ms", "p95")),
    ("P99 MS", lambda t: _get(t, "latency_ms", "p99")),
]


def stdout_is_terminal() -> bool:
    """Whether a person reads stdout (tables) or a program does (plain rows)."""
    return sys.stdout.isatty()


class Output:
    """Where one command's result goes: a table, a few lines, or JSON."""

    def __init__(self, *, json_mode: bool, piped: bool | None = None) -> None:
        self.json_mode = json_mode
        self.piped = not stdout_is_terminal() if piped is None else piped
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=False)

    def _rows(self, lines: Iterable[list[str]]) -> None:
        sys.stdout.write("".join("\t".join(cells) + "\n" for cells in lines))
        sys.stdout.flush()

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        sys.stdout.flush()

    def warn(self, text: str) -> None:
        sys.stderr.write(f"edgefleet fleet: {one_line(text)}\n")

    def line(self, text: str) -> None:
        self.console.print(Text(text))

    def table(self, title: str, columns: list[Column], rows: Iterable[JsonObject]) -> None:
        if self.piped:
            names = [name for name, _getter in columns]
            body = [[plain(get(row), _PIPED_CELL_CHARS) for _n, get in columns] for row in rows]
            self._rows([names, *body])
            return
        cells = [[plain(getter(row)) for _header, getter in columns] for row in rows]
        table = Table(title=f"{title} ({len(cells)})", title_justify="left")
        # The first column names the row: never cut it; narrow terminals shorten the rest.
        first = max([len(columns[0][0]), *(len(row[0]) for row in cells)])
        for index, (header, _getter) in enumerate(columns):
            if index == 0:
                table.add_column(header, no_wrap=True, min_width=first)
            else:
                table.add_column(header, no_wrap=True, overflow="ellipsis")
        for row in cells:
            table.add_row(*(Text(cell) for cell in row))
        self.console.print(table)

    def record(self, title: str, fields: list[tuple[str, Any]]) -> None:
        if self.piped:
            self._rows([name, plain(value, _PIPED_CELL_CHARS)] for name, value in fields)
            return
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for name, value in fields:
            table.add_row(Text(name), Text(plain(value, 200)))
        self.console.print(table)


def device_fields(device: JsonObject) -> list[tuple[str, Any]]:
    telemetry = device.get("last_telemetry")
    fields = [
        ("device", device.get("device_id")),
        ("class", device.get("device_class")),
        ("tags", device.get("tags")),
        ("online", device.get("online")),
        ("last seen", device.get("last_seen")),
        ("phase", device.get("phase")),
        ("running", device.get("running")),
        ("desired", device.get("desired")),
        ("pinned", device.get("pinned")),
        ("agent version", device.get("agent_version")),
        ("last error", device.get("last_error")),
    ]
    if isinstance(telemetry, dict):
        latency = telemetry.get("latency_ms")
        fields += [
            ("telemetry at", telemetry.get("ts")),
            ("telemetry seq", telemetry.get("seq")),
            ("telemetry model", telemetry.get("model")),
            ("inferences", telemetry.get("inference_count")),
            ("errors", telemetry.get("error_count")),
        ]
        if isinstance(latency, dict):
            fields += [(f"latency {k} ms", v) for k, v in latency.items()]
    return fields


def model_fields(model: JsonObject) -> list[tuple[str, Any]]:
    raw = model.get("manifest")
    manifest: dict[str, Any] = raw if isinstance(raw, dict) else {}
    fields: list[tuple[str, Any]] = [
        ("model", f"{plain(model.get('name'))}@{plain(model.get('version'))}"),
        ("format", model.get("format")),
        ("precision", model.get("precision")),
        ("task", model.get("task")),
        ("size", _size(model.get("size"))),
        ("sha256", model.get("sha256")),
        ("signature", signature(model)),
        ("signature key id", model.get("signature_key_id")),
        ("created", model.get("created_at")),
        ("parent", model.get("parent_version")),
        ("dataset sha256", model.get("dataset_sha256")),
        ("training ref", model.get("training_ref")),
        ("converter report", "yes" if isinstance(model.get("converter_report"), dict) else None),
    ]
    for key in ("inputs", "outputs"):
        tensors = manifest.get(key)
        if isinstance(tensors, list):
            fields += [(key[:-1], _tensor(t)) for t in tensors[:16]]
    files = manifest.get("files")
    if isinstance(files, list):
        fields += [("file", f"{plain(_get(f, 'path'))} ({_size(_get(f, 'size'))})") for f in files]
    return fields


def _tensor(spec: Any) -> str:
    if not isinstance(spec, dict):
        return plain(spec)
    shape = spec.get("shape")
    dims = "×".join(plain(d) for d in shape) if isinstance(shape, list) else plain(shape)
    return f"{plain(spec.get('name'))} {plain(spec.get('dtype'))}[{dims}]"
