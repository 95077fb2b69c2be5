"""From fetched values to the exact files ASCP would write: names, bytes and modes. Pure, no I/O.

The file set is the product: as a pure function of (spec, values) it is byte-identical for the init
container, the sidecar and `once`, and the writer can compare sets to skip a swap that changes nothing.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

import jmespath
import jmespath.exceptions

from fetcher.contract import FetchSpec
from fetcher.contract.formats import FormatError, add_formats
from fetcher.errors import ObjectError, ObjectErrors, OutputFormatError, RenderError
from fetcher.expand import dynamic_files
from fetcher.values import text_bytes

if TYPE_CHECKING:
    from fetcher.sources import FetchedValue

# Relative path below the target directory -> (content, mode).
RenderedFiles: TypeAlias = dict[str, tuple[bytes, int]]

_QUOTE_HINT = 'a key containing "-" must be quoted in JMESPath, e.g. path: \'"db-user"\''


def render(spec: FetchSpec, fetched: Mapping[int, FetchedValue]) -> RenderedFiles:
    """Every output file of the spec; raises ObjectErrors listing every object that does not fit."""
    files: RenderedFiles = {}
    errors: list[ObjectError] = []
    documents: dict[int, object] = {}
    broken: set[int] = set()
    for out in spec.output_files():
        obj = spec.objects[out.object_index]
        value = fetched.get(out.object_index)
        if value is None:
            errors.append(RenderError("was not fetched", object_name=obj.object_name))
            broken.add(out.object_index)
            continue
        if out.expands:
            continue  # its files come from fetcher.expand, below
        if out.jmes_index is None or out.jmes_path is None:
            files[out.name] = (value.data, out.mode)
            continue
        if out.object_index in broken:
            continue
        try:
            if out.object_index not in documents:
                documents[out.object_index] = parse_json_value(obj.object_name, value)
            text = select_string(obj.object_name, documents[out.object_index], out.jmes_path)
        except RenderError as exc:
            errors.append(exc)
            if out.object_index not in documents:
                broken.add(out.object_index)  # one "not JSON" per object, not one per path
            continue
        files[out.name] = (text_bytes(text), out.mode)
    if any(obj.expand_json or obj.discover is not None for obj in spec.objects):
        # The documents' names are taken too: a key may not give one, nor write below one.
        taken = {**files, **{name: None for _, name in spec.output_formats}}
        dynamic, dynamic_errors = dynamic_files(spec, fetched, taken)
        files.update(dynamic)
        errors.extend(dynamic_errors)
    if errors:
        raise ObjectErrors(errors)
    if spec.output_formats:
        files = with_documents(files, spec.output_formats)
    return files


def with_documents(files: RenderedFiles, formats: Sequence[tuple[str, str]]) -> RenderedFiles:
    """The files plus the dotenv / JSON documents, so one swap writes them all.

    A document holds every value, so its mode is no more open than any file's: the AND of their modes.
    """
    mode = functools.reduce(operator.and_, (file_mode for _, file_mode in files.values()), 0o777)
    try:
        return add_formats(files, dict(formats), mode)
    except FormatError as exc:
        raise OutputFormatError(str(exc)) from None


def parse_json_value(object_name: str, value: FetchedValue) -> object:
    """The value as JSON, for jmesPath. The error never quotes the value."""
    if value.binary:
        raise RenderError(
            "jmesPath needs a JSON SecretString, but this secret holds SecretBinary; "
            "store the JSON as SecretString or remove jmesPath",
            object_name=object_name,
        )
    try:
        text = value.data.decode("utf-8")
    except UnicodeDecodeError:
        raise RenderError(
            "jmesPath needs JSON text, but the value is not UTF-8; remove jmesPath", object_name=object_name
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: str(exc) is safe too, but exc.doc is the secret.
        raise RenderError(
            f"jmesPath needs a JSON value, but the value is not JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}); store a JSON object or remove jmesPath",
            object_name=object_name,
        ) from None
    except RecursionError:  # the value is the tenant's: never a crash, whatever its shape
        raise RenderError(
            "jmesPath needs a JSON value, but the value is not JSON (nested too deep); store a flatter JSON object "
            "or remove jmesPath",
            object_name=object_name,
        ) from None


def select_string(object_name: str, document: object, path: str) -> str:
    """Evaluate one jmesPath; the result must be a string."""
    try:
        expression = jmespath.compile(path)
    except jmespath.exceptions.ParseError as exc:
        hint = f"; {_QUOTE_HINT}" if "-" in path and '"' not in path else ""
        raise RenderError(
            f"is not a valid JMESPath expression ({getattr(exc, 'msg', 'syntax error')}){hint}",
            object_name=object_name,
            path=path,
        ) from None
    try:
        result = expression.search(document)
    except jmespath.exceptions.JMESPathError as exc:
        raise RenderError(
            f"could not be evaluated ({type(exc).__name__})", object_name=object_name, path=path
        ) from None
    if isinstance(result, str):
        return result
    if result is None:
        raise RenderError(_no_match_reason(document, path), object_name=object_name, path=path)
    raise RenderError(
        f"selects {_kind(result)}, not a string; point it at a string value, "
        "or use to_string(...) to write the JSON text of a number, list or object",
        object_name=object_name,
        path=path,
    )


def _no_match_reason(document: object, path: str) -> str:
    # Key names are not listed: some teams keep a value in a key name, and errors must never quote values.
    if not isinstance(document, dict):
        return f"matched nothing: the value is {_kind(document)}, not a JSON object"
    reason = f"matched nothing in a JSON object with {len(document)} top-level key(s); check the key's spelling"
    if any("-" in str(key) for key in document) and '"' not in path:
        reason += f"; {_QUOTE_HINT}"
    return reason


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__
