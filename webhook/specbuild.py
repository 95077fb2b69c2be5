"""FetchSpecs built from inline objects or a SecretProviderClass, once per distinct input.

Why it exists: parsing and validating the objects YAML dominates an admission,
and a Deployment's replicas (or many pods naming one class) ask for the same
spec again and again. `resolve_spec` decides which values win; this module
turns the winners into a spec through the one spec model (`fetcher.spec`) and
remembers the result in `webhook.memo`'s spec cache. The key is content, not
resourceVersion: files given to `inject --secret-provider-class` have none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fetcher.spec import SpecError, build_spec, spec_from_secret_provider_class
from webhook import memo


@dataclass(frozen=True)
class SpecOptions:
    refresh: str | None
    file_uid: int | None
    file_gid: int | None
    notify_url: str | None
    notify_signal: str | None
    min_refresh_seconds: float
    # Workload Identity settings for provider: gcp, as (key, value) pairs (hashable: the memo key holds them).
    gcp_identity: tuple[tuple[str, str | None], ...] = ()

    def as_arguments(self) -> dict[str, Any]:
        return {
            "gcp_identity": dict(self.gcp_identity),
            "refresh_interval": self.refresh,
            "file_uid": self.file_uid,
            "file_gid": self.file_gid,
            "notify_url": self.notify_url,
            "notify_signal": self.notify_signal,
            "min_refresh_seconds": self.min_refresh_seconds,
        }


def inline_spec(
    objects: str,
    region: str | None,
    failover: str | None,
    translation: str | None,
    options: SpecOptions,
    names: Mapping[str, str],
    secret_objects: str | None = None,
    output_formats: str | None = None,
    provider: str | None = None,
) -> memo.SpecResult:
    def build() -> memo.SpecResult:
        try:
            return memo.BuiltSpec.of(
                build_spec(
                    objects=objects,
                    region=region,
                    failover_region=failover,
                    path_translation=translation,
                    field_names=names,
                    secret_objects=secret_objects,
                    output_formats=output_formats,
                    provider=provider,
                    **options.as_arguments(),
                )
            )
        except SpecError as exc:
            return exc.problems

    key = (
        "inline",
        objects,
        region,
        failover,
        translation,
        options,
        tuple(names.items()),
        secret_objects,
        output_formats,
        provider,
    )
    return memo.remembered_spec(key, build)


def trimmed_spc(
    manifest: Mapping[str, Any], namespace: str, name: str, overrides: Mapping[str, str | None]
) -> dict[str, Any]:
    """The SPC as the spec model should see it: only what matters, with the pod's overrides merged in."""
    spec = manifest.get("spec")
    body = dict(spec) if isinstance(spec, Mapping) else {}
    params = body.get("parameters")
    merged = dict(params) if isinstance(params, Mapping) else {}
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    body["parameters"] = merged
    return {
        "apiVersion": manifest.get("apiVersion"),
        "kind": manifest.get("kind"),
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def spc_spec(trimmed: Mapping[str, Any], options: SpecOptions, names: Mapping[str, str]) -> memo.SpecResult:
    def build() -> memo.SpecResult:
        try:
            return memo.BuiltSpec.of(
                spec_from_secret_provider_class(trimmed, field_names=names, **options.as_arguments())
            )
        except SpecError as exc:
            return exc.problems

    key = ("spc", memo.content_key(trimmed), options, tuple(names.items()))
    return memo.remembered_spec(key, build)
