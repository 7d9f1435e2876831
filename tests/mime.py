"""Build MIME multi-part userdata the way cloud-init's tools do, for tests."""

from __future__ import annotations


def mime(*parts: tuple[str, bytes]) -> bytes:
    out = b'Content-Type: multipart/mixed; boundary="==B=="\nMIME-Version: 1.0\n\n'
    for ctype, body in parts:
        out += b"--==B==\nContent-Type: " + ctype.encode() + b"\nMIME-Version: 1.0\n\n" + body + b"\n"
    return out + b"--==B==--\n"
