"""Publish what a release pushed by digest: the notes, a digest list, a Helm values file, a pinned chart.

Why it exists: tags move, digests do not. The release workflow pushes both
images and knows their digests; this script writes them where users and the
chart read them, so the published chart pulls by digest and anyone can verify
the signatures of exactly what was released:

    python scripts/release_digests.py --version 0.1.0 \\
        --webhook-digest sha256:... --fetcher-digest sha256:... --out dist/release \\
        [--pin-chart charts/ferry/values.yaml] [--chart-digest sha256:...]

It writes `digests.txt` (one `repository:tag@digest` a line), `values-digests.yaml`
(for `helm install -f`) and `notes.md` (the release notes). `--pin-chart` sets
the two `digest: ""` values of the chart in place, keeping every comment.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
VALUES = REPO_ROOT / "charts" / "ferry" / "values.yaml"
CHART_REPOSITORY = "oci://ghcr.io/ferry-dev/charts"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The indent of the two empty digests of values.yaml: `image.digest` and `fetcher.image.digest`.
DIGEST_INDENT = {"webhook": "  ", "fetcher": "    "}


class ReleaseError(ValueError):
    pass


def digest(text: str, what: str) -> str:
    if not DIGEST.fullmatch(text):
        raise ReleaseError(f"{what} {text[:80]!r} is not a digest like sha256:<64 hex digits>")
    return text


def repositories(values_text: str) -> dict[str, str]:
    """The image repositories the chart deploys, read from its values (one place names them)."""
    values = yaml.safe_load(values_text)
    return {"webhook": values["image"]["repository"], "fetcher": values["fetcher"]["image"]["repository"]}


def pin_chart_values(values_text: str, digests: dict[str, str]) -> str:
    """values.yaml with both image digests set; fails unless each empty digest is found exactly once."""
    for name, indent in DIGEST_INDENT.items():
        empty = re.compile(f'^{indent}digest: ""$', re.MULTILINE)
        values_text, count = empty.subn(f"{indent}digest: {digests[name]}", values_text)
        if count != 1:
            raise ReleaseError(f"values.yaml: expected one empty {name} image digest, found {count}")
    pinned = yaml.safe_load(values_text)
    if pinned["image"]["digest"] != digests["webhook"] or pinned["fetcher"]["image"]["digest"] != digests["fetcher"]:
        raise ReleaseError("values.yaml: the digests landed in the wrong place")
    return values_text


def notes(version: str, repos: dict[str, str], digests: dict[str, str], chart_digest: str | None) -> str:
    lines = [
        f"## Ferry {version}",
        "",
        "Images (multi-platform: linux/amd64, linux/arm64), signed keyless with cosign:",
        "",
        "| image | digest |",
        "|---|---|",
        *(f"| `{repos[name]}:{version}` | `{digests[name]}` |" for name in ("webhook", "fetcher")),
        "",
        f"The chart `{CHART_REPOSITORY}/ferry` version {version} pins both digests.",
    ]
    if chart_digest:
        lines.append(f"Its own digest: `{chart_digest}`.")
    lines += [
        "",
        "```sh",
        f"helm install ferry {CHART_REPOSITORY}/ferry --version {version} --namespace ferry-system --create-namespace",
        f"pipx install 'ferry-secrets[webhook]=={version}'   # ferry-webhook inject, ferry-fetcher",
        *(
            f"cosign verify {repos[name]}@{digests[name]} \\\n"
            f"  --certificate-identity-regexp '/.github/workflows/release.yml@refs/tags/v{version}$' \\\n"
            "  --certificate-oidc-issuer https://token.actions.githubusercontent.com"
            for name in ("webhook", "fetcher")
        ),
        "```",
        "",
        "`values-digests.yaml` pins the same digests for a chart installed from a clone (`helm install -f`).",
        "",
    ]
    return "\n".join(lines)


def write_release(
    out: Path, version: str, digests: dict[str, str], values_text: str, chart_digest: str | None = None
) -> list[Path]:
    repos = repositories(values_text)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "digests.txt": "".join(f"{repos[name]}:{version}@{digests[name]}\n" for name in ("webhook", "fetcher")),
        "values-digests.yaml": yaml.safe_dump(
            {"image": {"digest": digests["webhook"]}, "fetcher": {"image": {"digest": digests["fetcher"]}}},
            sort_keys=False,
        ),
        "notes.md": notes(version, repos, digests, chart_digest),
    }
    for name, text in files.items():
        (out / name).write_text(text)
    return [out / name for name in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", required=True, help="the release version, e.g. 0.1.0")
    parser.add_argument("--webhook-digest", required=True, metavar="SHA256")
    parser.add_argument("--fetcher-digest", required=True, metavar="SHA256")
    parser.add_argument("--chart-digest", metavar="SHA256", help="the pushed chart's digest, for the notes")
    parser.add_argument("--out", type=Path, required=True, help="directory for digests.txt, values, notes.md")
    parser.add_argument("--pin-chart", type=Path, metavar="VALUES", help="set both digests in this values.yaml")
    args = parser.parse_args(argv)
    try:
        digests = {
            "webhook": digest(args.webhook_digest, "--webhook-digest"),
            "fetcher": digest(args.fetcher_digest, "--fetcher-digest"),
        }
        chart_digest = digest(args.chart_digest, "--chart-digest") if args.chart_digest else None
        values_path = args.pin_chart or VALUES
        values_text = values_path.read_text()
        if args.pin_chart:
            args.pin_chart.write_text(pin_chart_values(values_text, digests))
        for path in write_release(args.out, args.version, digests, values_text, chart_digest):
            print(path)
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
