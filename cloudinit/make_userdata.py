#!/usr/bin/env python3
"""Build EC2 userdata for snaptastic and cloud-init: a MIME multi-part archive of a few files.

    python3 cloudinit/make_userdata.py [-o OUT] [--gzip] FILE[:TYPE] ...

Each FILE becomes one part. Without :TYPE the content type is chosen from the content:

    #cloud-config ...     text/cloud-config   (cloud-init's configuration)
    #!...                 text/x-shellscript  (a cloud-init user script)
    {...} (a JSON object) application/json    (snaptastic's role, cluster and environment)

cloud-init handles the first two and logs one warning for the application/json part ("Unhandled unknown
content-type"), then goes on; snaptastic reads the application/json part and ignores the others.
`cloud-init devel make-mime` can only make text/* parts and refuses types it does not know without
--force, which is why this small script exists; it needs only Python's standard library.

The boundary is derived from the content, so the same files always give the same bytes. EC2 limits
userdata to 16 KiB; --gzip compresses the archive (both cloud-init and snaptastic read gzip).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

EC2_USERDATA_LIMIT = 16 * 1024


def guess_type(text: str) -> str:
    if text.startswith("#cloud-config"):
        return "text/cloud-config"
    if text.startswith("#!"):
        return "text/x-shellscript"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return "application/json"
    raise ValueError("cannot tell the content type: give it as FILE:TYPE (e.g. userdata.txt:text/cloud-config)")


def build(parts: list[tuple[str, str, str]]) -> bytes:
    """parts: (filename, content type, text) -> the MIME archive."""
    digest = hashlib.sha256()
    for name, ctype, text in parts:
        digest.update(f"{name}\0{ctype}\0{text}\0".encode())
    outer = MIMEMultipart(boundary=f"==snaptastic-{digest.hexdigest()[:24]}==")
    for name, ctype, text in parts:
        # ASCII stays readable (7bit); anything else is base64-encoded UTF-8.
        part = MIMEText(text, "plain", "us-ascii" if text.isascii() else "utf-8")
        part.set_type(ctype)
        part.add_header("Content-Disposition", "attachment", filename=name)
        outer.attach(part)
    return outer.as_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="FILE[:TYPE]")
    parser.add_argument("-o", "--output", help="write here instead of standard output")
    parser.add_argument("--gzip", action="store_true", help="gzip-compress the archive")
    args = parser.parse_args(argv)
    parts = []
    for spec in args.files:
        path, _, ctype = spec.partition(":")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            ctype = ctype or guess_type(text)
        except ValueError as exc:
            parser.error(f"{path}: {exc}")
        parts.append((path.rsplit("/", 1)[-1], ctype, text))
    data = build(parts)
    if args.gzip:
        data = gzip.compress(data, mtime=0)
    if len(data) > EC2_USERDATA_LIMIT:
        print(f"warning: {len(data)} bytes is more than EC2's 16 KiB userdata limit; try --gzip", file=sys.stderr)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
