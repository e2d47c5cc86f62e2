"""`k8scc core-yaml`: puts k8scc's entry into the `chaincode.externalBuilders` list of a peer's
core.yaml, so an image or an operator configures the peer with one command instead of a
hand-edited copy of Fabric's file.

The entry replaces any entry of the same name and every other builder keeps its place: the peer
tries builders in list order, so an existing order is the operator's choice. The file is read
and written back with ruamel.yaml's round trip, so operators' comments and key order survive
(indentation becomes ruamel's). Imported here only: the four steps never pay for it.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from k8scc.config import kind_of
from k8scc.configfile import CONFIG_ENV
from k8scc.errors import K8sccError
from k8scc.peer import POD_UID_ENV

DEFAULT_NAME = "k8scc"
DEFAULT_BUILDER_DIR = Path("/opt/k8scc")
# The peer prunes the builder's environment to these names (plus PATH, LD_LIBRARY_PATH, LIBPATH
# and TMPDIR): in-cluster API discovery, an explicit config file, the default peer.id, and the
# peer pod's uid (spares `run` a request before its create).
DEFAULT_PROPAGATE = (
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    CONFIG_ENV,
    "CORE_PEER_ID",
    POD_UID_ENV,
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def builder_entry(
    builder_dir: Path = DEFAULT_BUILDER_DIR,
    name: str = DEFAULT_NAME,
    propagate: Sequence[str] = (),
) -> dict[str, Any]:
    """The externalBuilders entry for a builder directory written by `k8scc install-builder`."""
    if not name:
        raise K8sccError("the builder name must not be empty")
    if not builder_dir.is_absolute():
        # The peer resolves a relative path against its own working directory.
        raise K8sccError(f"builder directory {builder_dir} must be an absolute path")
    for variable in propagate:
        if not _ENV_NAME.fullmatch(variable):
            raise K8sccError(f"{variable!r} is not an environment variable name")
    return {
        "name": name,
        "path": str(builder_dir),
        "propagateEnvironment": list(dict.fromkeys([*DEFAULT_PROPAGATE, *propagate])),
    }


def merge(document: Any, entry: dict[str, Any]) -> Any:
    """`document` (core.yaml as ruamel.yaml's round trip loads it; None for an empty file) with
    `entry` as the only builder of its name. Changed in place, which keeps every comment where
    it was; returned, since an empty file becomes a new document."""
    if document is None:
        document = CommentedMap()
    if not isinstance(document, dict):
        raise K8sccError(f"expected a mapping at the top level, got {kind_of(document)}")
    chaincode = document.get("chaincode")
    if chaincode is None:
        chaincode = document["chaincode"] = CommentedMap()
    if not isinstance(chaincode, dict):
        raise K8sccError(f"chaincode: expected a mapping, got {kind_of(chaincode)}")
    builders = chaincode.get("externalBuilders")
    if builders is None:
        builders = chaincode["externalBuilders"] = CommentedSeq()
    if not isinstance(builders, list):
        raise K8sccError(f"chaincode.externalBuilders: expected a list, got {kind_of(builders)}")
    if isinstance(builders, CommentedSeq):
        builders.fa.set_block_style()  # Fabric's `externalBuilders: []` would stay on one line
    ours = [
        index
        for index, builder in enumerate(builders)
        if isinstance(builder, dict) and builder.get("name") == entry["name"]
    ]
    node = _node(entry)
    if ours:
        _carry_trailing_comment(builders[ours[0]], node)
        builders[ours[0]] = node
        for index in reversed(ours[1:]):
            del builders[index]
    else:
        # The comment after the last builder introduces the key that follows the list.
        _carry_trailing_comment(builders, node)
        builders.append(node)
    return document


def _node(value: Any) -> Any:
    """`value` as the round trip's own types, which can carry comments."""
    if isinstance(value, dict):
        return CommentedMap((key, _node(item)) for key, item in value.items())
    if isinstance(value, list):
        return CommentedSeq(_node(item) for item in value)
    return value


def _last_line(node: Any) -> tuple[Any, Any] | None:
    """The collection and key of `node`'s deepest last element, which holds the comment that
    follows `node` in the file."""
    while isinstance(node, (CommentedMap, CommentedSeq)) and node:
        key = next(reversed(node)) if isinstance(node, CommentedMap) else len(node) - 1
        if not isinstance(node[key], (CommentedMap, CommentedSeq)) or not node[key]:
            return node, key
        node = node[key]
    return None


def _carry_trailing_comment(old: Any, new: Any) -> None:
    """Moves the comment after `old` to after `new`: a map keeps it in the third slot of its
    key's comment list, a list in the first slot of its item's."""
    source, target = _last_line(old), _last_line(new)
    if source is None or target is None:
        return
    held = source[0].ca.items.get(source[1])
    slot = 2 if isinstance(source[0], CommentedMap) else 0
    if not held or held[slot] is None:
        return
    comment, held[slot] = held[slot], None
    tokens = [None, None, None, None]
    tokens[2 if isinstance(target[0], CommentedMap) else 0] = comment
    target[0].ca.items[target[1]] = tokens


def _yaml() -> YAML:
    round_trip = YAML()
    round_trip.preserve_quotes = True
    round_trip.width = 4096  # long lines stay as the operator wrote them
    return round_trip


def render(text: str | None, entry: dict[str, Any], source: str = "core.yaml") -> str:
    """The YAML text of `text` merged with `entry`; without text, a document holding just it."""
    round_trip = _yaml()
    document: Any = None
    if text is not None:
        try:
            # Written back with the file's own indentation, as far as one can be guessed.
            _, indent, dash = load_yaml_guess_indent(text)
            round_trip.indent(mapping=indent or 2, sequence=indent or 2, offset=dash or 0)
            document = round_trip.load(text)
        except YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(error, "problem", None) or error
            raise K8sccError(f"{source}: not valid YAML{at}: {problem}") from None
    try:
        merged = merge(document, entry)
    except K8sccError as error:
        raise K8sccError(f"{source}: {error}") from None
    out = io.StringIO()
    round_trip.dump(merged, out)
    return out.getvalue()


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise K8sccError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise K8sccError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise K8sccError(f"cannot read {path}: {error.strerror}") from None


def write_atomically(path: Path, text: str) -> None:
    """Replaces `path` in one rename, keeping its permissions, so the peer never reads half a
    file and a failure leaves the old one in place."""
    target = path.resolve()
    mode = target.stat().st_mode & 0o7777
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def core_yaml(core: Path | None, entry: dict[str, Any], in_place: bool) -> str | None:
    """What `k8scc core-yaml` does: the merged text to print, or None once written in place."""
    if core is None:
        if in_place:
            raise K8sccError("--in-place needs a CORE_YAML file")
        return render(None, entry)
    text = render(read(core), entry, str(core))
    if not in_place:
        return text
    try:
        write_atomically(core, text)
    except OSError as error:
        raise K8sccError(f"cannot write {core}: {error.strerror or error}") from None
    return None
