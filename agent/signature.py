"""A model's Ed25519 signature checked in a short-lived child process, not in the agent.

``cryptography`` (its Rust extension carries its own OpenSSL) adds 7.6 MB to the agent's
resident set the first time it is imported, and a module cannot be unloaded: an agent with
``trusted_keys`` (every fleet that signs its models) would hold it for its whole life to run one
verification per model load (bench/memory_bench.py ``--signed``, docs/memory.md). So the agent
sends the exact bytes the signature covers (the manifest it has parsed and whose files it has
hashed: no second read of ``manifest.json``), the signature and its trusted keys to
``python -m agent.signature`` and reads back one line. The check is the same code
(:func:`edgefleet.signing.verify_bytes`); what it costs is an interpreter start per model load
(start, update, shadow), and the child's memory only while it runs.

Fails closed: a child that cannot start, crashes, times out or answers anything but the key id
is a refusal.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.errors import AgentConfigError
from edgefleet.contract import Manifest, Signature, signing_bytes

#: Ceiling for one check (an interpreter start and one Ed25519 verification: ~0.1-0.3 s on
#: x86_64; an emulated arm64 board is ~40x slower).
TIMEOUT_S = 120.0


class SignatureCheckError(Exception):
    """The signature does not verify, or could not be checked (one line, for the caller)."""


def read_trusted_keys(paths: Sequence[Path]) -> list[bytes]:
    """Read and check the trusted public keys now, so a bad key fails at start-up."""
    if not paths:
        return []
    # Their form only, without cryptography (verified in a child: verify_isolated).
    from edgefleet.signing import SignatureError, check_public_key_pem

    keys = []
    for path in paths:
        try:
            pem = path.read_bytes()[: 64 * 1024]
            check_public_key_pem(pem)
        except OSError as err:
            raise AgentConfigError(f"trusted_keys: cannot read {path}: {err.strerror}") from err
        except SignatureError as err:
            raise AgentConfigError(f"trusted_keys: {path}: {err}") from err
        keys.append(pem)
    return keys


def verify_isolated(
    manifest: Manifest, trusted_pems: Sequence[bytes], *, timeout_s: float = TIMEOUT_S
) -> str:
    """Check ``manifest``'s signature against ``trusted_pems`` in a child; return the key id."""
    if manifest.signature is None:
        raise SignatureCheckError("manifest is not signed")
    request = {
        "message": base64.b64encode(signing_bytes(manifest)).decode("ascii"),
        "key_id": manifest.signature.key_id,
        "value": manifest.signature.value,
        "keys": [pem.decode("ascii", errors="replace") for pem in trusted_pems],
    }
    try:
        done = subprocess.run(  # noqa: S603 (this interpreter, this package's module)
            [sys.executable, "-m", "agent.signature"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SignatureCheckError(f"the signature check did not run: {err}") from err
    answer = done.stdout.strip()
    if done.returncode == 0 and answer == manifest.signature.key_id:
        return answer
    if done.returncode == 1 and answer:
        raise SignatureCheckError(answer.splitlines()[-1])
    tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    raise SignatureCheckError(f"the signature check failed: {tail[:300]}")


def main() -> int:
    """The child: one request on stdin, the signing key id (exit 0) or the reason (exit 1)."""
    from edgefleet.signing import SignatureError, verify_bytes

    request = json.loads(sys.stdin.read())
    signature = Signature(key_id=request["key_id"], value=request["value"])
    try:
        message = base64.b64decode(request["message"], validate=True)
        key_id = verify_bytes(message, signature, [k.encode("ascii") for k in request["keys"]])
    except SignatureError as err:
        print(err)  # noqa: T201 (the answer to the parent)
        return 1
    print(key_id)  # noqa: T201 (the answer to the parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
