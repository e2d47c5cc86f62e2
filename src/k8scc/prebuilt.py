"""Packages of type `k8s`, in the format fabric-builder-k8s defines: the package's code is an
`image.json` naming a chaincode image built elsewhere, `{"name": ..., "digest": ...}`, beside
the usual META-INF. The digest is mandatory: the package id must stand for the code the
ledger runs, and a tag can be moved to other code after approval."""

from __future__ import annotations

import re
from pathlib import Path

from k8scc.errors import K8sccError
from k8scc.metadata import read_object, string_field

IMAGE_JSON = "image.json"
# The repository grammar of image references (an optional registry host and port, then
# lower-case path components), with no tag or digest of its own.
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(
    rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")


def read_image_json(source_dir: Path) -> str:
    """The image a `k8s` package names, as `name@digest`; one error line if it names none."""
    what = IMAGE_JSON
    path = source_dir / IMAGE_JSON
    if not path.is_file():
        raise K8sccError(f"{what} not found in the k8s package: it must name the chaincode image")
    data = read_object(path, what)
    name = string_field(data, "name", what)
    if len(name) > 255 or not _NAME.fullmatch(name):
        raise K8sccError(
            f"{what}: name {name!r} is not an image repository without tag or digest"
            " (e.g. ghcr.io/org/chaincode)"
        )
    if data.get("digest") is None and data.get("tag") is not None:
        raise K8sccError(
            f"{what}: field 'digest' is missing: a k8s package names its image by digest,"
            f" not by tag {data['tag']!r}, so that its package id stands for one image"
        )
    digest = string_field(data, "digest", what)
    if not _DIGEST.fullmatch(digest):
        raise K8sccError(f"{what}: digest {digest!r} is not sha256:<64 hex> or sha512:<128 hex>")
    return f"{name}@{digest}"
