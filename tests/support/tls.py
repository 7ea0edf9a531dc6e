"""A throwaway self-signed certificate for TLS tests on 127.0.0.1."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from budget_exporter.web.webconfig import WebConfig, load_web_config


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


def tls_web_config(folder: Path) -> tuple[WebConfig, ssl.SSLContext | None]:
    """A certificate (``cert.pem``, ``key.pem``) in ``folder`` and the loaded web config
    (``web.yml``, written there) that serves TLS with it."""
    self_signed_cert(folder / "cert.pem", folder / "key.pem")
    web = folder / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    return load_web_config(str(web))
