"""Read LightningJob YAML and explain every problem by file, document and field path.

Used by `lightjob validate` and `lightjob run`; never raises on bad input, so a user's
mistake never becomes a traceback.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from lightjob.api.models import API_VERSION, KIND, LightningJob


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # e.g. "spec.runPolicy.backoffLimit"; "" for the whole document
    message: str

    def __str__(self) -> str:
        if not self.path or self.message.startswith(self.path):
            return self.message
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # file name, or "<stdin>"
    index: int  # 1-based position in a multi-document stream; 0 for the whole file
    raw: Any
    job: LightningJob | None
    problems: tuple[Problem, ...]

    @property
    def label(self) -> str:
        name = self.raw.get("metadata", {}).get("name") if isinstance(self.raw, dict) else None
        named = f" ({name})" if isinstance(name, str) else ""
        return f"{self.source}: document {self.index}{named}" if self.index else self.source

    def report(self) -> list[str]:
        return [f"{self.label}: {problem}" for problem in self.problems]


class InvalidJobError(Exception):
    """Raised by `load_job` with every problem already formatted for the user."""


def read_documents(source: str, text: str) -> list[Document]:
    """Parse a YAML stream and validate every non-empty document in it."""
    try:
        raws = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        return [
            Document(source, 0, None, None, (Problem("", f"not valid YAML{where}: {problem}"),))
        ]
    if not raws:
        return [Document(source, 0, None, None, (Problem("", "no YAML document found"),))]
    return [_validate(source, i, raw) for i, raw in enumerate(raws, start=1)]


def read_file(path: str) -> list[Document]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return [Document(path, 0, None, None, (Problem("", f"cannot read file: {reason}"),))]
    return read_documents(path, text)


def load_job(path: str) -> LightningJob:
    """The one LightningJob in `path`, or InvalidJobError listing what to fix."""
    docs = read_file(path)
    lines = [line for doc in docs for line in doc.report()]
    if lines:
        raise InvalidJobError("\n".join(lines))
    if len(docs) != 1 or docs[0].job is None:
        raise InvalidJobError(f"{path}: expected exactly one LightningJob, found {len(docs)}")
    return docs[0].job


def _validate(source: str, index: int, raw: Any) -> Document:
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        problem = Problem("", f"expected a mapping (a LightningJob object), got a {kind}")
        return Document(source, index, raw, None, (problem,))
    if raw.get("kind") != KIND or raw.get("apiVersion") != API_VERSION:
        got = f"{raw.get('apiVersion', '(none)')} {raw.get('kind', '(none)')}"
        problem = Problem("", f"expected apiVersion {API_VERSION} and kind {KIND}, got {got}")
        return Document(source, index, raw, None, (problem,))
    try:
        job = LightningJob.model_validate(raw)
    except ValidationError as err:
        return Document(source, index, raw, None, tuple(explain(err, raw)))
    return Document(source, index, raw, job, ())


def explain(err: ValidationError, raw: Any) -> list[Problem]:
    """Turn pydantic errors into one Problem per field, with paths as the user wrote them."""
    problems: dict[str, Problem] = {}
    for error in err.errors():
        keys = _keys_in_input(raw, error["loc"])
        path = _format_path(keys)
        if path in problems:  # a union reports each member; the first message is enough
            continue
        problems[path] = Problem(path, _message(error, keys))
    return list(problems.values())


def _keys_in_input(raw: Any, loc: tuple[Any, ...]) -> list[Any]:
    """Keep the parts of pydantic's location that exist in the input.

    pydantic inserts tags for union members and validators ("int", "literal['auto']");
    walking the input drops them.
    """
    keys: list[Any] = []
    node = raw
    for part in loc:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            keys.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str):
            keys.append(part)  # a required field that is missing
            break
        else:
            break
    return keys


def _format_path(keys: list[Any]) -> str:
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _message(error: Any, keys: list[Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field" + _did_you_mean(keys)
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":
        return message
    got = repr(error.get("input"))
    return f"{message[0].lower()}{message[1:]} (got {got[:60]})"


def _did_you_mean(keys: list[Any]) -> str:
    known = _field_names_at(LightningJob, keys[:-1])
    close = difflib.get_close_matches(str(keys[-1]), known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _field_names_at(model: Any, keys: list[Any]) -> list[str]:
    """Wire names of the fields of the model found at `keys` (for suggestions)."""
    annotation = model
    for key in keys:
        if isinstance(key, int):
            annotation = _unwrap(annotation, list)
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        by_alias = {f.alias or n: f for n, f in annotation.model_fields.items()}
        if key not in by_alias:
            return []
        annotation = _unwrap(by_alias[key].annotation, None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or n for n, f in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any, container: type | None) -> Any:
    """Strip Optional, and the list around an item when `container` is list."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if container is not None and get_origin(annotation) is container:
        return args[0]
    if get_origin(annotation) is not None and len(args) == 1:
        return _unwrap(args[0], container)
    return annotation
