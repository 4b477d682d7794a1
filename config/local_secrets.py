"""Secrets for a development machine, generated once into the git-ignored `var/local.env`.

Production reads every secret from the environment and never comes here. On a developer's machine a
missing secret is generated on first start, so that `make run` works on a fresh clone without anyone
inventing keys, and the same values survive restarts (keys encrypted under them stay readable).
"""

import base64
import os
import secrets
import tempfile
from pathlib import Path


def _generate() -> dict[str, str]:
    def key32() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "CARDKEY_MASTER_KEYS": f"v1:{key32()}",
        "CARDKEY_INDEX_KEY": key32(),
        "SANDBOX_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        # The Ed25519 seed that signs evidence packages (disputes/evidence.py).
        "EVIDENCE_SIGNING_KEY": key32(),
    }


def _read(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def load_local_secrets(path: Path) -> dict[str, str]:
    """Return the development secrets, creating the file the first time (safe against a race)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "# Generated for local development only. Never used in production.\n"
        body += "".join(f"{name}={value}\n" for name, value in _generate().items())
        handle, temp_name = tempfile.mkstemp(dir=path.parent)
        with os.fdopen(handle, "w") as temp:
            temp.write(body)
        os.chmod(temp_name, 0o600)
        try:
            os.link(temp_name, path)  # fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(temp_name)
    values = _read(path)
    # A file made before a secret was added gets the new one appended, so old checkouts keep starting.
    missing = {name: value for name, value in _generate().items() if name not in values}
    if missing:
        with path.open("a") as local:
            local.write("".join(f"{name}={value}\n" for name, value in missing.items()))
        values.update(missing)
    return values
