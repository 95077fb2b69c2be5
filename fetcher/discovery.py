"""Discovery: the SSM parameters under a path, or the secrets with a name prefix and tags, as one object.

Users want "everything under /shop/" without listing each name; one discovery is one unit of work whose
version digests every name and version found. What a listing costs: docs/aws-api-economics.md ("Discovery").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from fetcher.contract import ObjectSpec
from fetcher.errors import AwsRejectedError, translating_aws_errors
from fetcher.logs import log

if TYPE_CHECKING:
    from fetcher.aws import AwsClients
    from fetcher.sources import FetchResult, IndexedObject, VersionProbe

SSM_PAGE = 10
SECRETS_PAGE = 20
# Pages one listing may take beyond the full pages maxObjects needs: AWS may answer short or empty pages
# with a next token, but a listing whose tokens never end (a repeated or endless NextToken) must stop.
SPARE_PAGES = 10
Members = list[tuple[str, bytes, str]]


class DiscoverySource:
    """Every discovery object of one type, each one unit; the probe is the same listing."""

    def __init__(self, clients: AwsClients, region: str, object_type: str) -> None:
        self._clients = clients
        self._region = region
        self._ssm = object_type == "ssmparameter"

    def fetch_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], FetchResult]]:
        return [partial(self._discover, index, obj) for index, obj in items]

    def probe_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], list[VersionProbe]]]:
        return [partial(self._probe, index, obj) for index, obj in items]

    def _probe(self, index: int, obj: ObjectSpec) -> list[VersionProbe]:
        from fetcher.sources import VersionProbe

        value = self._discover(index, obj)[index]
        return [VersionProbe(index=index, region=value.region, version=value.version, value=value)]

    def _discover(self, index: int, obj: ObjectSpec) -> FetchResult:
        from fetcher.sources import FetchedValue

        members = self._parameters(obj) if self._ssm else self._secrets(obj)
        members.sort()
        digest = hashlib.sha256()
        for name, _, version in members:
            digest.update(f"{len(name)}:{name}:{version};".encode())
        log.info("discovered", object=obj.object_name, count=len(members), region=self._region)
        value = FetchedValue(
            b"",
            digest.hexdigest()[:32],
            self._region,
            members=tuple((name, data) for name, data, _ in members),
        )
        return {index: value}

    def _parameters(self, obj: ObjectSpec) -> Members:
        assert obj.discover is not None
        path = obj.object_name.rstrip("/") or "/"
        params: dict[str, Any] = {
            "Path": path,
            "Recursive": obj.discover.recursive,
            "WithDecryption": True,
            "MaxResults": SSM_PAGE,
        }
        found: Members = []
        for reply in self._pages("ssm", "GetParametersByPath", obj, params):
            for parameter in self._listed(obj, reply, "Parameters", "GetParametersByPath"):
                value = parameter.get("Value", "")
                if not isinstance(value, str):
                    raise self._malformed(obj, "GetParametersByPath", "a parameter's Value is not text")
                found.append((parameter["Name"], value.encode(), str(parameter.get("Version", ""))))
            self._bounded(obj, len(found))
        return found

    def _secrets(self, obj: ObjectSpec) -> Members:
        assert obj.discover is not None
        filters: list[dict[str, Any]] = [{"Key": "name", "Values": [obj.object_name]}]
        for key, value in obj.discover.tags:
            filters += [{"Key": "tag-key", "Values": [key]}, {"Key": "tag-value", "Values": [value]}]
        params: dict[str, Any] = {"Filters": filters, "MaxResults": SECRETS_PAGE}
        found: Members = []
        for reply in self._pages("secretsmanager", "BatchGetSecretValue", obj, params):
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0] if isinstance(errors[0], dict) else {}
                example = str(first.get("SecretId"))[:120]
                raise self._rejected(
                    obj,
                    str(first.get("ErrorCode") or "SecretError"),
                    "BatchGetSecretValue",
                    "grant secretsmanager:GetSecretValue on them or narrow the selection",
                    detail=f"{len(errors)} selected secret(s) could not be read, e.g. {example}",
                )
            for secret in self._listed(obj, reply, "SecretValues", "BatchGetSecretValue"):
                name = secret["Name"]
                if not name.startswith(obj.object_name):
                    continue  # AWS's name filter is a prefix match; Ferry keeps only names that start exactly so
                found.append((name, self._secret_bytes(obj, secret), str(secret.get("VersionId", ""))))
            self._bounded(obj, len(found))
        return found

    def _pages(self, service: str, operation: str, obj: ObjectSpec, params: dict[str, Any]) -> Any:
        """Each page's reply; stops when AWS gives no NextToken (or the bound is passed, by `_bounded`).

        A token named twice, or more pages than maxObjects can need plus SPARE_PAGES, is an error: a listing ends.
        """
        assert obj.discover is not None
        client = self._clients.client("ssm" if service == "ssm" else "secretsmanager", self._region)
        size = SSM_PAGE if service == "ssm" else SECRETS_PAGE
        allowed = -(-obj.discover.max_objects // size) + SPARE_PAGES
        seen: set[str] = set()
        token: str | None = None
        while True:
            if token in seen or len(seen) + 1 >= allowed:
                raise self._rejected(
                    obj,
                    "EndlessPages",
                    operation,
                    f"AWS named a next page {'it had named before' if token in seen else f'past {allowed} pages'}; "
                    "the listing stopped there. Narrow the path, prefix or tags, and try again",
                )
            if token:
                seen.add(token)
            page = dict(params, NextToken=token) if token else params
            with translating_aws_errors(
                object_name=obj.object_name, region=self._region, service=service, operation=operation
            ):
                reply = client.call(operation, page)
            yield reply
            token = str(reply.get("NextToken") or "") or None
            if not token:
                return

    def _listed(self, obj: ObjectSpec, reply: dict[str, Any], key: str, operation: str) -> list[dict[str, Any]]:
        """The page's items, each a mapping with a text Name; anything else is an answer Ferry cannot read."""
        items = reply.get(key) or []
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("Name"), str) for item in items
        ):
            raise self._malformed(obj, operation, f"{key} is not a list of named items")
        return items

    def _secret_bytes(self, obj: ObjectSpec, secret: dict[str, Any]) -> bytes:
        text, binary = secret.get("SecretString"), secret.get("SecretBinary")
        if isinstance(text, str):
            return text.encode()
        if isinstance(binary, str):  # the JSON protocol sends blobs in base64
            try:
                return base64.b64decode(binary, validate=True)
            except binascii.Error:
                pass
        raise self._malformed(obj, "BatchGetSecretValue", "a secret holds neither SecretString nor base64 SecretBinary")

    def _malformed(self, obj: ObjectSpec, operation: str, what: str) -> AwsRejectedError:
        return self._rejected(
            obj, "MalformedReply", operation, f"the answer could not be read ({what}); try again later"
        )

    def _bounded(self, obj: ObjectSpec, count: int) -> None:
        assert obj.discover is not None
        if count > obj.discover.max_objects:
            raise self._rejected(
                obj,
                "TooManyObjects",
                "discover",
                f"the selection holds more than {obj.discover.max_objects} objects (discover.maxObjects); "
                "narrow the path, prefix or tags, or raise maxObjects (at most 200)",
            )

    def _rejected(self, obj: ObjectSpec, code: str, operation: str, hint: str, detail: str = "") -> AwsRejectedError:
        return AwsRejectedError(
            object_name=obj.object_name,
            region=self._region,
            code=code,
            operation=operation,
            hint=hint,
            detail=detail,
            kind="parameter" if self._ssm else "secret",
        )
