"""A throwaway self-signed certificate for TLS tests on 127.0.0.1."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_cert(cert: Path, key: Path) -> None:
    """Write a one-day certificate for localhost and 127.0.0.1, and its key, with openssl."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
