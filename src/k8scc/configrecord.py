"""The configuration document as `build` read it, kept beside the build output with the text
it came from, so that `run`, whose start is on every launch's path, reads JSON instead of
loading the YAML parser. A record counts only while the file still holds that exact text."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "k8scc-config.json"


def record(directory: Path, text: str, document: Any) -> None:
    """Writes the record, unless JSON cannot hold the document exactly (keys that are not
    strings, dates): YAML's reading is the one that counts, so such a file is read again."""
    try:
        encoded = json.dumps({"text": text, "document": document})
    except (TypeError, ValueError):
        return
    if json.loads(encoded)["document"] != document:
        return
    # Only the peer reads it: the file may hold credentials (a proxy URL's password), and the
    # build output is kept in the peer's ledger storage.
    fd = os.open(directory / FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as record_file:
        record_file.write(encoded)


def recorded(directory: Path, text: str) -> Any | None:
    """The recorded document if it was read from `text`, else None."""
    try:
        found = json.loads((directory / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("text") != text:
        return None
    return found.get("document")
