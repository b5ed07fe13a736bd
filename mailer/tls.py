"""TLS for the mail adapters: one way to build a client context, certificates always checked."""

from __future__ import annotations

import ssl


def client_context(ca_file: str | None, error: type[Exception]) -> ssl.SSLContext:
    """The system's trusted CAs plus ``ca_file`` (a private CA), with host names checked and
    nothing older than TLS 1.2.

    A CA file that cannot be read raises ``error`` naming the file.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # whatever the system's OpenSSL allows
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise error(f"cannot load the CA file {ca_file}: {exc}") from exc
    return context
