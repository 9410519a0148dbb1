"""A digits artifact with reference statistics, and digits inputs (plain and shifted)."""

from __future__ import annotations

import email.parser
import email.policy
import shutil
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from agent.engine import BackendOptions, load_model
from agent.state import Serving
from converters.stats import reference_stats
from edgefleet.contract import Manifest, SampleMeta, parse_manifest
from tests.utils.artifacts import PIXEL_SCALE, _digits


def with_reference(artifact: Path, out: Path) -> Path:
    """A copy of ``artifact`` whose manifest has the converter's reference statistics of the
    first 1,400 digits (the training rows; inputs used in tests come after)."""
    copy = Path(shutil.copytree(artifact, out))
    manifest = parse_manifest((copy / "manifest.json").read_bytes())
    x, _ = _digits()
    ref = reference_stats(x[:1400], layout="flat", predicted=None, n_classes=None)
    updated: Manifest = manifest.model_copy(update={"reference_stats": ref})
    (copy / "manifest.json").write_text(updated.to_json())
    return copy


def serving(artifact: Path) -> Serving:
    return Serving.of(load_model(artifact, options=BackendOptions()))


def digit_pixels(i: int) -> np.ndarray:
    """Digit ``i`` as the 8×8 uint8 frame a camera source would deliver."""
    x, _ = _digits()
    pixels: np.ndarray = np.clip(np.rint(x[i].reshape(8, 8) / PIXEL_SCALE), 0, 255)
    return pixels.astype(np.uint8)


class SampleServer:
    """Answers each POST with the next scripted status (then 201); stores what it got."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.received: list[tuple[SampleMeta, bytes, str | None]] = []
        self.statuses: list[int] = []
        self.stored: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                raw = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
                parts = {
                    p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()
                }
                raw_meta = parts["meta"].get_payload(decode=True)
                content = parts["file"].get_payload(decode=True)
                assert isinstance(raw_meta, bytes) and isinstance(content, bytes)
                meta = SampleMeta.model_validate_json(raw_meta)
                outer.received.append((meta, content, self.headers.get("Authorization")))
                status = outer.script.pop(0) if outer.script else 201
                if status == 201 and meta.sample_id in outer.stored:
                    status = 200  # a replay: already stored
                if status in (200, 201):
                    outer.stored.add(meta.sample_id)
                outer.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1/samples"
