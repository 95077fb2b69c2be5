"""The attack corpus: hostile annotations and SecretProviderClasses, each with the field its denial must name.

Why it exists: a pod's annotations and its namespace's SecretProviderClasses are
written by app teams, not by the platform team that runs Ferry, so they are
untrusted input that ends up as file names in a shared volume, a mount path in
every app container and a YAML document parsed at admission. Each case here is
one way to abuse that, and states what a useful denial must mention (the
annotation or the SPC field to edit). `test_attack_corpus.py` sends every case
through `/mutate` over TLS and records the outcome table for docs/reliability.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.webhook_server import spc

OBJECTS = "ferry.dev/objects"
MOUNT = "ferry.dev/mount-path"


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    # Pod annotations (ferry.dev/inject is added).
    annotations: dict[str, str]
    # Every substring must appear in the denial message (the field to fix, and what is wrong).
    expect: tuple[str, ...]
    # A SecretProviderClass the pod names (added to the cluster view).
    spc: dict[str, Any] | None = None
    containers: list[dict[str, Any]] = field(default_factory=list)


def _object(alias: str | None = None, name: str = "app/db", **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"objectName": name, "objectType": "secretsmanager"}
    if alias is not None:
        entry["objectAlias"] = alias
    entry.update(extra)
    return entry


def _yaml(*entries: dict[str, Any]) -> str:
    """Objects YAML with every string JSON-quoted, so control characters survive as escapes."""
    lines = []
    for entry in entries:
        first = True
        for key, value in entry.items():
            prefix = "- " if first else "  "
            lines.append(f"{prefix}{key}: {json.dumps(value, ensure_ascii=True)}")
            first = False
    return "\n".join(lines) + "\n"


def _alias(alias: str) -> dict[str, str]:
    return {OBJECTS: _yaml(_object(alias))}


def _translated(name: str, translation: str = "False") -> dict[str, str]:
    return {OBJECTS: _yaml(_object(name=name)), "ferry.dev/path-translation": translation}


ALIAS = "objects[0].objectAlias"
GOOD = _yaml(_object("db"))

TRAVERSAL = [
    Case("path traversal", "alias ../x", _alias("../x"), (OBJECTS, ALIAS)),
    Case("path traversal", "alias a/../../x", _alias("a/../../x"), (OBJECTS, ALIAS)),
    Case("path traversal", "alias /..", _alias("/.."), (OBJECTS, ALIAS)),
    Case("path traversal", "alias x/..", _alias("x/.."), (OBJECTS, ALIAS)),
    Case("path traversal", "alias absolute /etc/passwd", _alias("/etc/passwd"), (OBJECTS, ALIAS, "absolute")),
    Case("path traversal", "alias .", _alias("."), (OBJECTS, ALIAS)),
    Case("path traversal", "alias ..", _alias(".."), (OBJECTS, ALIAS)),
    Case("path traversal", "alias ..data (swap dir)", _alias("..data"), (OBJECTS, ALIAS)),
    Case("path traversal", "alias backslash ..\\x", _alias("..\\x"), (OBJECTS, ALIAS)),
    Case("path traversal", "alias backslash a\\b", _alias("a\\b"), (OBJECTS, ALIAS, "backslash")),
    Case("path traversal", "alias NUL", _alias("x\x00y"), (OBJECTS, ALIAS, "NUL")),
    Case("path traversal", "alias newline", _alias("x\ny"), (OBJECTS, ALIAS, "control")),
    Case("path traversal", "alias ESC sequence", _alias("x\x1b[31m"), (OBJECTS, ALIAS, "control")),
    Case("path traversal", "alias DEL", _alias("x\x7f"), (OBJECTS, ALIAS, "control")),
    Case("path traversal", "alias U+FF0F fullwidth solidus", _alias("a\uff0f..\uff0fb"), (OBJECTS, ALIAS, "slash")),
    Case("path traversal", "alias U+2215 division slash", _alias("a\u2215..\u2215b"), (OBJECTS, ALIAS, "slash")),
    Case("path traversal", "alias U+2044 fraction slash", _alias("a\u2044..\u2044b"), (OBJECTS, ALIAS, "slash")),
    Case("path traversal", "alias U+FF3C fullwidth backslash", _alias("a\uff3cb"), (OBJECTS, ALIAS)),
    Case("path traversal", "alias U+2024 one-dot leaders", _alias("\u2024\u2024"), (OBJECTS, ALIAS)),
    Case("path traversal", "alias 300-byte segment", _alias("a" * 300), (OBJECTS, ALIAS, "255")),
    Case("path traversal", "name ../../x, translation off", _translated("../../x"), (OBJECTS, "objects[0]")),
    Case("path traversal", "name /a/../../b, translation off", _translated("/a/../../b"), (OBJECTS, "objects[0]")),
    Case(
        "path traversal",
        "jmesPath alias ../x",
        {
            OBJECTS: "- objectName: app/db\n  objectType: secretsmanager\n  jmesPath:\n"
            "    - {path: password, objectAlias: ../x}\n"
        },
        (OBJECTS, "objects[0].jmesPath[0].objectAlias"),
    ),
    Case(
        "path traversal",
        "jmesPath alias absolute",
        {
            OBJECTS: "- objectName: app/db\n  objectType: secretsmanager\n  jmesPath:\n"
            "    - {path: password, objectAlias: /etc/shadow}\n"
        },
        (OBJECTS, "objects[0].jmesPath[0].objectAlias"),
    ),
    Case(
        "path traversal",
        "path-translation /",
        {OBJECTS: GOOD, "ferry.dev/path-translation": "/"},
        ("path-translation",),
    ),
    Case(
        "path traversal",
        "path-translation .",
        {OBJECTS: GOOD, "ferry.dev/path-translation": "."},
        ("path-translation",),
    ),
]

DUPLICATES = [
    Case(
        "duplicate files",
        "a/b and a_b after translation",
        {OBJECTS: _yaml(_object(name="a/b"), _object(name="a_b"))},
        (OBJECTS, "objects[1]", "already"),
    ),
    Case(
        "duplicate files",
        "same alias twice",
        {OBJECTS: _yaml(_object("db", name="one"), _object("db", name="two"))},
        (OBJECTS, "objects[1].objectAlias", "already"),
    ),
    Case(
        "duplicate files",
        "jmesPath alias equals an object's file",
        {
            OBJECTS: "- objectName: app/db\n  objectType: secretsmanager\n  objectAlias: db\n  jmesPath:\n"
            "    - {path: password, objectAlias: db}\n"
        },
        (OBJECTS, "objects[0].jmesPath[0].objectAlias", "already"),
    ),
    Case(
        "duplicate files",
        "file and directory of the same name",
        {OBJECTS: _yaml(_object(name="a"), _object(name="a/b")), "ferry.dev/path-translation": "False"},
        (OBJECTS, "objects[1]", "'a'"),
    ),
    Case(
        "duplicate files",
        "same object listed twice, one file name",  # with distinct aliases it is allowed, as in ASCP
        {OBJECTS: _yaml(_object(objectVersionLabel="AWSCURRENT"), _object(objectVersionLabel="AWSPREVIOUS"))},
        (OBJECTS, "objects[1].objectName", "already gives"),
    ),
]

_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)
YAML = [
    Case("YAML", "billion laughs (anchors/aliases)", {OBJECTS: _BOMB}, (OBJECTS, "anchors")),
    Case(
        "YAML",
        "merge key with alias",
        {OBJECTS: "- &o {objectName: a, objectType: secretsmanager}\n- <<: *o\n"},
        (OBJECTS, "anchors"),
    ),
    Case("YAML", "nested 50 deep", {OBJECTS: "[" * 50 + "]" * 50}, (OBJECTS, "nested deeper")),
    Case("YAML", "nested 5,000 deep", {OBJECTS: "[" * 5000 + "]" * 5000}, (OBJECTS, "nested deeper")),
    Case("YAML", "python object tag", {OBJECTS: "- !!python/object/apply:os.system [id]\n"}, (OBJECTS, "YAML")),
    Case("YAML", "not YAML", {OBJECTS: "- objectName: [unclosed\n"}, (OBJECTS, "YAML")),
    Case("YAML", "a mapping, not a list", {OBJECTS: "objectName: a\n"}, (OBJECTS, "list")),
    Case("YAML", "empty", {OBJECTS: ""}, ("ferry.dev/",)),
    Case(
        "YAML",
        "201 objects",
        {OBJECTS: _yaml(*(_object(f"f{i}", name=f"s{i}") for i in range(201)))},
        (OBJECTS, "limit"),
    ),
    Case("oversized", "objects YAML of 70 KB", {OBJECTS: GOOD + "#" + "x" * 70_000 + "\n"}, (OBJECTS, "limit")),
    Case("oversized", "objects YAML of 300 KB", {OBJECTS: GOOD + "#" + "x" * 300_000 + "\n"}, (OBJECTS, "limit")),
    Case("oversized", "region of 100 KB", {OBJECTS: GOOD, "ferry.dev/region": "r" * 100_000}, ("ferry.dev/region",)),
]

UNKNOWN = [
    Case(
        "unknown keys",
        "objectNmae typo",
        {OBJECTS: "- objectNmae: a\n  objectType: secretsmanager\n"},
        (OBJECTS, "objects[0].objectNmae", "objectName"),
    ),
    Case(
        "unknown keys",
        "objectTemplate (unsupported)",
        {OBJECTS: _yaml(_object("a", objectTemplate="x"))},
        (OBJECTS, "objectTemplate"),
    ),
    Case(
        "unknown keys",
        "jmesPath entry extra key",
        {
            OBJECTS: "- objectName: app/db\n  objectType: secretsmanager\n  jmesPath:\n"
            "    - {path: a, objectAlias: b, mode: '0777'}\n"
        },
        (OBJECTS, "jmesPath[0].mode"),
    ),
    Case(
        "unknown keys",
        "annotation ferry.dev/regoin",
        {OBJECTS: GOOD, "ferry.dev/regoin": "us-east-1"},
        ("ferry.dev/regoin", "ferry.dev/region"),
    ),
    Case(
        "unknown keys", "status written by the user", {OBJECTS: GOOD, "ferry.dev/status": "skip"}, ("ferry.dev/status",)
    ),
    Case(
        "unknown keys",
        "objectType ssm",
        {OBJECTS: "- objectName: a\n  objectType: ssm\n"},
        (OBJECTS, "objectType", "ssmparameter"),
    ),
    Case(
        "unknown keys",
        "filePermission setuid 4755",
        {OBJECTS: _yaml(_object("a", filePermission="4755"))},
        (OBJECTS, "filePermission"),
    ),
    Case(
        "unknown keys",
        "filePermission as a YAML number",
        {OBJECTS: "- objectName: a\n  objectType: secretsmanager\n  filePermission: 0600\n"},
        (OBJECTS, "filePermission"),
    ),
    Case(
        "unknown keys",
        "ARN of another service",
        {OBJECTS: _yaml({"objectName": "arn:aws:iam::123456789012:role/admin"})},
        (OBJECTS, "objectName"),
    ),
    Case(
        "unknown keys",
        "both SPC and inline objects",
        {OBJECTS: GOOD, "ferry.dev/secret-provider-class": "good"},
        ("ferry.dev/objects", "secret-provider-class"),
    ),
    Case(
        "unknown keys",
        "notify URL to the instance metadata service",
        {OBJECTS: GOOD, "ferry.dev/notify-url": "http://169.254.169.254/latest/meta-data/iam"},
        ("ferry.dev/notify-url", "localhost"),
    ),
    Case(
        "unknown keys",
        "notify URL localhost lookalike",
        {OBJECTS: GOOD, "ferry.dev/notify-url": "http://localhost.evil.example/"},
        ("ferry.dev/notify-url",),
    ),
    Case(
        "unknown keys",
        "notify SIGKILL",
        {OBJECTS: GOOD, "ferry.dev/notify-signal": "SIGKILL:app"},
        ("ferry.dev/notify-signal",),
    ),
    Case(
        "unknown keys",
        "region with shell metacharacters",
        {OBJECTS: GOOD, "ferry.dev/region": "us-east-1; curl evil"},
        ("ferry.dev/region",),
    ),
]

MOUNTS = [
    Case("mount path", f"mount {path!r}", {OBJECTS: GOOD, MOUNT: path}, (MOUNT,))
    for path in (
        "/",
        "/etc",
        "/etc/ssl/certs",
        "/proc",
        "/proc/self",
        "/sys",
        "/dev",
        "/usr/bin",
        "/var/run/secrets",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/var/run/secrets/eks.amazonaws.com/serviceaccount",
        "/run/secrets",
        "/tmp",
        "/var",
        "//etc",
        "/./etc",
        "/etc/",
        "/mnt/../etc",
        "/mnt/secrets-store/../../proc",
        "relative/path",
        "",
        "/mnt/\x00x",
        "/mnt/" + "x" * 600,
    )
]

REFRESH = [
    Case(
        "refresh floor",
        f"refresh {value!r}",
        {OBJECTS: GOOD, "ferry.dev/refresh-interval": value},
        ("ferry.dev/refresh-interval",),
    )
    for value in ("1s", "9s", "500ms", "-5s", "1e9", "0.5", "1h-1s", "8d", "forever")
]

CONTAINERS = [
    Case(
        "containers",
        "a container that does not exist",
        {OBJECTS: GOOD, "ferry.dev/containers": "nope"},
        ("ferry.dev/containers", "nope"),
    ),
    Case(
        "containers",
        "one of two does not exist",
        {OBJECTS: GOOD, "ferry.dev/containers": "app,ghost"},
        ("ferry.dev/containers", "ghost"),
    ),
    Case(
        "containers",
        "Ferry's own container",
        {OBJECTS: GOOD, "ferry.dev/containers": "ferry-init"},
        ("ferry.dev/containers",),
    ),
    Case("containers", "empty list", {OBJECTS: GOOD, "ferry.dev/containers": ","}, ("ferry.dev/containers",)),
    Case(
        "containers",
        "app container named ferry-sidecar",
        {OBJECTS: GOOD},
        ("ferry-sidecar",),
        containers=[{"name": "ferry-sidecar", "image": "x"}],
    ),
]

SPC_FIELD = "spec.parameters.objects"
SPCS = [
    Case(
        "SecretProviderClass",
        "SPC alias traversal",
        {"ferry.dev/secret-provider-class": "traversal"},
        ("traversal", SPC_FIELD, "objectAlias"),
        spc=spc("traversal", _yaml(_object("../../etc/x"))),
    ),
    Case(
        "SecretProviderClass",
        "SPC U+2215 alias",
        {"ferry.dev/secret-provider-class": "lookalike"},
        ("lookalike", SPC_FIELD, "slash"),
        spc=spc("lookalike", _yaml(_object("x\u2215..\u2215y"))),
    ),
    Case(
        "SecretProviderClass",
        "SPC YAML bomb",
        {"ferry.dev/secret-provider-class": "bomb"},
        ("bomb", SPC_FIELD, "anchors"),
        spc=spc("bomb", _BOMB),
    ),
    Case(
        "SecretProviderClass",
        "SPC 5,000 deep",
        {"ferry.dev/secret-provider-class": "deep"},
        ("deep", SPC_FIELD, "nested"),
        spc=spc("deep", "[" * 5000 + "]" * 5000),
    ),
    Case(
        "SecretProviderClass",
        "SPC duplicate after translation",
        {"ferry.dev/secret-provider-class": "dupes"},
        ("dupes", SPC_FIELD, "already"),
        spc=spc("dupes", _yaml(_object(name="a/b"), _object(name="a_b"))),
    ),
    Case(
        "SecretProviderClass",
        "SPC unknown key",
        {"ferry.dev/secret-provider-class": "typo"},
        ("typo", SPC_FIELD, "objectAliass"),
        spc=spc("typo", _yaml(_object(objectAliass="x"))),
    ),
    Case(
        "SecretProviderClass",
        "SPC provider azure",
        {"ferry.dev/secret-provider-class": "azure"},
        ("azure", "spec.provider"),
        spc={**spc("azure", GOOD), "spec": {"provider": "azure", "parameters": {"objects": GOOD}}},
    ),
    Case(
        "SecretProviderClass",
        "SPC translation /",
        {"ferry.dev/secret-provider-class": "slash"},
        ("slash", "pathTranslation"),
        spc=spc("slash", GOOD, pathTranslation="/"),
    ),
    Case(
        "SecretProviderClass",
        "SPC objects not a string",
        {"ferry.dev/secret-provider-class": "typed"},
        ("typed", SPC_FIELD),
        spc=spc("typed", {"objectName": "a"}),
    ),
    Case(
        "SecretProviderClass",
        "SPC that does not exist",
        {"ferry.dev/secret-provider-class": "missing"},
        ("ferry.dev/secret-provider-class", "missing"),
    ),
    Case(
        "SecretProviderClass",
        "SPC name with traversal",
        {"ferry.dev/secret-provider-class": "../other/spc"},
        ("ferry.dev/secret-provider-class",),
    ),
]

CORPUS: list[Case] = [*TRAVERSAL, *DUPLICATES, *YAML, *UNKNOWN, *MOUNTS, *REFRESH, *CONTAINERS, *SPCS]
# SecretProviderClasses the cluster view serves: every case's, plus one good one.
CORPUS_SPCS = [case.spc for case in CORPUS if case.spc] + [spc("good", GOOD)]
