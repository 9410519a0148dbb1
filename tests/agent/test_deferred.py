"""agent.deferred: ssl, urllib.request and hashlib are imported when first used, not at start.

Each test runs in a fresh interpreter: this pytest process imported ssl long ago.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, *, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_agents_imports_load_no_ssl_urllib_request_or_openssl_hashes(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device_id = "d"\nserver_url = "http://127.0.0.1:9"\ntoken = "t"\n'
        f'data_dir = "{tmp_path / "data"}"\n[mqtt]\nurl = "mqtt://127.0.0.1:9"\n'
        f'[input]\ntype = "http"\nport = 9\n'
    )
    out = run(f"""
        import sys
        from pathlib import Path
        from agent.deferred import defer_unused, is_loaded, load_for
        assert defer_unused() == ["ssl", "urllib.request", "hashlib"]
        from agent.config import load_config
        config = load_config(Path({str(config)!r}))
        load_for([config.server_url, config.mqtt.url])
        import agent.service, paho.mqtt.client, http.server, http.client
        agent.service.AgentService(config)
        assert not is_loaded("ssl") and "_ssl" not in sys.modules
        assert not is_loaded("urllib.request")
        assert not is_loaded("hashlib") and "_hashlib" not in sys.modules
        assert "libcrypto" not in open("/proc/self/maps").read()
        # paho's websocket handshake still finds OpenSSL's hashes on first use
        assert paho.mqtt.client.hashlib.sha1(b"x").hexdigest().startswith("11f6ad8e")
        assert is_loaded("hashlib") and "_hashlib" in sys.modules
        # paho holds the stand-in; the first use imports the real module, once
        import ssl
        ctx = ssl.create_default_context()
        real = sys.modules["ssl"]
        assert is_loaded("ssl") and "_ssl" in sys.modules and real is not ssl
        assert isinstance(ctx, real.SSLContext)
        assert paho.mqtt.client.ssl.SSLContext is real.SSLContext
        assert http.client.HTTPSConnection is not None
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_deferred_urllib_request_fetches_over_http() -> None:
    out = run("""
        import threading
        from agent.deferred import defer_unused, is_loaded
        defer_unused()
        import http.server, urllib.request
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(b"body")
            def log_message(self, *a): pass
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        assert not is_loaded("urllib.request")
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        print(urllib.request.urlopen(url, timeout=10).read().decode())
        assert is_loaded("urllib.request")
        # a plain-http fetch needs no TLS: ssl stays a stand-in, HTTPS is still available
        assert not is_loaded("ssl") and hasattr(urllib.request, "HTTPSHandler")
        srv.shutdown()
    """)
    assert out.strip() == "body"


def test_many_threads_first_use_gets_one_real_module() -> None:
    out = run("""
        import sys, threading
        from agent.deferred import defer_unused
        defer_unused()
        import ssl
        stand_in = ssl
        barrier = threading.Barrier(16)
        got, errors = [], []
        def use():
            barrier.wait()
            try:
                got.append(stand_in.SSLContext)
            except Exception as err:  # noqa: BLE001
                errors.append(repr(err))
        threads = [threading.Thread(target=use) for _ in range(16)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        assert len(got) == 16 and {id(c) for c in got} == {id(sys.modules["ssl"].SSLContext)}
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.parametrize(
    ("urls", "loaded"),
    [
        (["http://s", "mqtt://b"], False),
        (["http://s", "mqtts://b:8883"], True),
        (["HTTPS://s", "mqtt://b"], True),
        ([None, "mqtt://b"], False),
        (["not a url", ""], False),
    ],
)
def test_a_tls_config_loads_ssl_at_start(urls: list[str | None], loaded: bool) -> None:
    out = run(f"""
        import sys
        from agent.deferred import defer_unused, is_loaded, load_for
        defer_unused()
        load_for({urls!r})
        print(is_loaded("ssl"), "_ssl" in sys.modules)
    """)
    assert out.split() == [str(loaded), str(loaded)]


def test_modules_already_imported_are_left_alone_and_probes_do_not_load() -> None:
    out = run("""
        import contextlib, sys, ssl
        from agent.deferred import DeferredModule, defer_unused, is_loaded
        assert defer_unused() == ["urllib.request", "hashlib"]
        assert sys.modules["ssl"] is ssl and is_loaded("ssl")
        stand_in = sys.modules["urllib.request"]
        assert isinstance(stand_in, DeferredModule)
        # tools that walk sys.modules look for __file__ / __path__: that is no use
        assert not hasattr(stand_in, "__path__") and not hasattr(stand_in, "__file__")
        assert not stand_in.loaded and defer_unused() == []
        with contextlib.suppress(AttributeError):
            stand_in.no_such_name
        assert stand_in.loaded and sys.modules["urllib.request"] is not stand_in
        assert stand_in.urlopen is sys.modules["urllib.request"].urlopen
        print("ok")
    """)
    assert out.strip() == "ok"


def test_the_agents_sha256_needs_no_openssl_and_matches_it(tmp_path: Path) -> None:
    """edgefleet.digest: the builtin SHA-256 while OpenSSL's hashes are not loaded, OpenSSL's
    once they are; the same digests either way (a model verified before and after an HTTPS
    download or a TLS websocket loaded libcrypto)."""
    model = tmp_path / "model.bin"
    model.write_bytes(bytes(range(256)) * 5000 + b"tail")
    out = run(f"""
        import sys
        from pathlib import Path
        from agent.deferred import defer_unused
        defer_unused()
        import agent.service
        from edgefleet.artifact import hash_file
        from edgefleet.digest import openssl_loaded, sha256
        before = hash_file(Path({str(model)!r}))
        small = sha256(b"abc").hexdigest()
        builtin = type(sha256()).__module__
        assert not openssl_loaded() and "libcrypto" not in open("/proc/self/maps").read()
        import hashlib
        hashlib.sha256  # the stand-in's first use loads OpenSSL's hashes
        assert openssl_loaded()
        after = hash_file(Path({str(model)!r}))
        print(before[0], before[1], after[0], small, builtin, type(sha256()).__module__)
    """)
    import hashlib

    data = model.read_bytes()
    expected = hashlib.sha256(data).hexdigest()
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2
    assert out.split() == [expected, str(len(data)), expected, abc, "_sha256", "_hashlib"]
