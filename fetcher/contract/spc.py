"""The SecretProviderClass adapter: ASCP's object in, a `FetchSpec` out.

Teams migrate from the Secrets Store CSI driver by pointing a pod at the SecretProviderClass they already have. The
webhook reads it from the API, `python -m fetcher once` and `python -m webhook inject` read it from a file; all of
them go through here, so a class means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fetcher.contract.model import PROVIDER_GCP, PROVIDERS, FetchSpec
from fetcher.contract.problems import FerryError, Problem, SpecError, listed, quote
from fetcher.contract.validate import build_spec

# A manifest file larger than this is not a SecretProviderClass someone wrote.
MAX_MANIFEST_BYTES = 1024 * 1024
# Far deeper than any manifest (a pod template in a CronJob is about 12 levels), far shallower than a bomb.
MAX_MANIFEST_DEPTH = 64
# How each field the class can get wrong is spelled inside it (build_spec's logical names, and the envelope's).
SPC_FIELD_NAMES = {
    "kind": "kind",
    "provider": "spec.provider",
    "usePodIdentity": "spec.parameters.usePodIdentity",
    "objects": "spec.parameters.objects",
    "region": "spec.parameters.region",
    "failoverRegion": "spec.parameters.failoverRegion",
    "pathTranslation": "spec.parameters.pathTranslation",
    "secretObjects": "spec.secretObjects",
    "outputFormats": "spec.parameters.outputFormats",
    "secrets": "spec.parameters.secrets",
    "auth": "spec.parameters.auth",
}
# What Ferry acts on; anything else in a class gets an admission warning (`secret_provider_class_warnings`).
KNOWN_SPC_FIELDS = ("provider", "parameters", "secretObjects")
KNOWN_SPC_PARAMETERS = ("objects", "region", "failoverRegion", "pathTranslation", "outputFormats")
# What Ferry reads of a provider: gcp class's parameters (the GCP provider's, fetcher.contract.gcp).
GCP_SPC_PARAMETERS = ("secrets", "auth")
# ASCP parameters Ferry reads but does not act on, and what it does instead.
IGNORED_SPC_PARAMETERS = {
    "usePodIdentity": (
        "Ferry uses whichever AWS identity the pod has (EKS Pod Identity or IRSA), found by the AWS SDK's default "
        "credential chain, so there is nothing to choose"
    ),
    "preferredAddressType": (
        "Ferry's containers reach the EKS Pod Identity agent at the address its webhook sets in the pod "
        "(AWS_CONTAINER_CREDENTIALS_FULL_URI), as every AWS SDK does"
    ),
}
MAX_WARNED_NAMES = 8


class ManifestError(FerryError, ValueError):
    """A manifest file that cannot be read as YAML, or holds no object; the message says which."""


def spec_from_secret_provider_class(
    manifest: Mapping[str, Any],
    *,
    region: str | None = None,
    failover_region: str | None = None,
    field_names: Mapping[str, str] | None = None,
    **options: Any,
) -> FetchSpec:
    """A FetchSpec from a SecretProviderClass object (as read from the API or a file).

    The SPC's own `region` / `failoverRegion` parameters win over the
    arguments, which are the fallbacks (namespace annotation, webhook default).
    Problems name fields as `SPC_FIELD_NAMES` spells them, unless `field_names`
    renames them (the webhook says which annotation a value came from); the
    raised SpecError's `source` names the class.
    """
    names = {**SPC_FIELD_NAMES, **(field_names or {})}
    meta = manifest.get("metadata") or {}
    where = f"SecretProviderClass {meta.get('namespace', '')}/{meta.get('name', '?')}".replace(" /", " ")
    problems: list[Problem] = []
    api_version = manifest.get("apiVersion", "")
    if manifest.get("kind") != "SecretProviderClass" or not str(api_version).startswith("secrets-store.csi.x-k8s.io/"):
        problems.append(
            Problem(
                names["kind"],
                f"expected kind SecretProviderClass in secrets-store.csi.x-k8s.io, got {quote(manifest.get('kind'))} "
                f"in {quote(api_version)}",
            )
        )
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    provider = spec.get("provider")
    if provider not in PROVIDERS:
        problems.append(Problem(names["provider"], f"is {quote(provider)}; Ferry serves provider: aws and gcp"))
    params = spec.get("parameters") if isinstance(spec.get("parameters"), Mapping) else {}
    assert isinstance(params, Mapping)
    if provider == PROVIDER_GCP:
        from fetcher.contract.gcp import check_auth

        check_auth(params.get("auth"), names["auth"], problems)
        if problems:
            raise SpecError(problems, where)
        try:
            return build_spec(
                objects=params.get("secrets"),
                region=None,
                field_names={**names, "objects": names["secrets"]},
                secret_objects=spec.get("secretObjects"),
                output_formats=params.get("outputFormats"),
                provider=PROVIDER_GCP,
                **options,
            )
        except SpecError as exc:
            raise exc.with_source(where) from None
    if "objects" not in params:
        problems.append(Problem(names["objects"], "is missing; list the secrets to mount, as for ASCP"))
    if params.get("usePodIdentity") not in (None, "", "true", "false", True, False):
        problems.append(Problem(names["usePodIdentity"], 'must be "true" or "false"'))
    if problems:
        raise SpecError(problems, where)
    try:
        return build_spec(
            objects=params.get("objects"),
            region=params.get("region") or region,
            failover_region=params.get("failoverRegion") or failover_region,
            path_translation=params.get("pathTranslation"),
            field_names=names,
            secret_objects=spec.get("secretObjects"),
            output_formats=params.get("outputFormats"),
            **options,
        )
    except SpecError as exc:
        raise exc.with_source(where) from None


def secret_provider_class_warnings(manifest: Mapping[str, Any], where: str = "") -> tuple[str, ...]:
    """One warning per field or parameter of the class that Ferry does not act on, saying what it does instead.

    Nothing in a class is dropped silently; a warning names the field, so it can be removed. `where` prefixes
    each warning (e.g. "SecretProviderClass ns/name: "). Bounded: at most `MAX_WARNED_NAMES` names are listed.
    """
    spec = manifest.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    params = spec.get("parameters")
    params = params if isinstance(params, Mapping) else {}
    warnings: list[str] = []
    for key, instead in IGNORED_SPC_PARAMETERS.items():
        if key in params and spec.get("provider") != PROVIDER_GCP:
            warnings.append(f"{where}spec.parameters.{key} is ignored: {instead}")
    gcp = spec.get("provider") == PROVIDER_GCP
    known = (*GCP_SPC_PARAMETERS, "outputFormats") if gcp else KNOWN_SPC_PARAMETERS
    ignored = {} if gcp else IGNORED_SPC_PARAMETERS
    unknown_params = sorted(str(key) for key in params if key not in known and key not in ignored)
    if unknown_params:
        warnings.append(
            f"{where}spec.parameters {listed(unknown_params, MAX_WARNED_NAMES, 60)} "
            f"{'is' if len(unknown_params) == 1 else 'are'} not known to Ferry and ignored; "
            f"Ferry reads {', '.join(known)}"
        )
    unknown_fields = sorted(str(key) for key in spec if key not in KNOWN_SPC_FIELDS)
    if unknown_fields:
        warnings.append(
            f"{where}spec {listed(unknown_fields, MAX_WARNED_NAMES, 60)} "
            f"{'is' if len(unknown_fields) == 1 else 'are'} not known to Ferry and ignored; "
            f"Ferry reads spec.{', spec.'.join(KNOWN_SPC_FIELDS)}"
        )
    return tuple(warnings)


def load_manifests(raw: bytes | str, origin: str, *, max_bytes: int = MAX_MANIFEST_BYTES) -> list[Any]:
    """Every YAML document in a manifest file (None for an empty one), bounded; `origin` names the file.

    The same guards as the `objects` YAML: a size bound, no anchors or aliases (562 bytes of nested aliases
    expand to gigabytes), and a nesting bound, all checked on the event stream before anything is built.
    """
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ManifestError(f"{origin} is {size} bytes, larger than {max_bytes}; is it the right file?")
    import yaml  # only the file-reading commands need YAML here; the fetcher's init starts faster without it

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        depth = 0
        for event in yaml.parse(raw, Loader=loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                line = f": line {mark.line + 1}" if mark is not None else ""
                raise ManifestError(
                    f"{origin}{line} uses a YAML anchor or alias (& or *); Kubernetes manifests "
                    "never need them: write each object out in full (kubectl kustomize or helm template does)"
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_MANIFEST_DEPTH:
                    raise ManifestError(f"{origin} is nested deeper than {MAX_MANIFEST_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return list(yaml.load_all(raw, Loader=loader))  # noqa: S506 - a SafeLoader (libyaml's when available)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc)
        raise ManifestError(f"{origin} is not valid YAML: {problem[:200]}") from None


def pick_secret_provider_class(documents: list[Any], origin: str) -> Mapping[str, Any]:
    """The first SecretProviderClass among the documents; a lone other object is returned for the model to judge."""
    documents = [document for document in documents if document is not None]
    for document in documents:
        if isinstance(document, Mapping) and document.get("kind") == "SecretProviderClass":
            return document
    if len(documents) == 1 and isinstance(documents[0], Mapping):
        return documents[0]  # let spec_from_secret_provider_class say what is wrong with it
    raise ManifestError(f"{origin} holds no SecretProviderClass")
