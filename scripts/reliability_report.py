"""Regenerate the measured tables of docs/reliability.md from a real run.

Why it exists: the figures in the reliability report must come from the code
as it is, not from memory. This script runs the reliability suite with
``FERRY_RELIABILITY_SUMMARY`` set (each test records its figures through
`conftest.record_result`), reads the JSON the bench scripts wrote
(soak_webhook, soak_sidecar, kill_swap), and rewrites every block between
``<!-- BEGIN generated:NAME -->`` and ``<!-- END generated:NAME -->`` in the
doc. Prose outside the markers is left alone.

    python scripts/reliability_report.py                      # default run + bench/results/*.json
    python scripts/reliability_report.py --slow               # also the -m slow tests
    python scripts/reliability_report.py --save-summary S.json   # keep what the run recorded
    python scripts/reliability_report.py --summary S.json     # reuse a summary, run nothing
    python scripts/reliability_report.py --bench-dir /tmp/soak
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "reliability.md"


def run_suite(slow: bool, keep: Path | None) -> tuple[dict[str, Any], dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        summary, junit = keep or Path(tmp) / "summary.json", Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:logging", f"--junitxml={junit}"]
        if slow:
            command += ["-m", "slow or not slow"]
        env = dict(os.environ, FERRY_RELIABILITY_SUMMARY=str(summary))
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=False, stdout=subprocess.DEVNULL)
        outcomes = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            kind = (
                "failed"
                if "failure" in kinds
                else "error"
                if "error" in kinds
                else "skipped"
                if "skipped" in kinds
                else "passed"
            )
            outcomes[kind] += 1
        recorded = json.loads(summary.read_text())
        recorded["_outcomes"] = outcomes
        if keep:
            keep.write_text(json.dumps(recorded, indent=2, sort_keys=True))
        return recorded, outcomes


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def block_corpus(summary: dict[str, Any]) -> str:
    cases = summary.get("attack_corpus", {})
    sizes = summary.get("attack_corpus_size", {}).get("cases", {})
    per_category: dict[str, list[int]] = {}
    for row in cases.values():
        counts = per_category.setdefault(row["category"], [0, 0])
        counts[0] += 1
        counts[1] += row["outcome"] == "denied"
    overview = md_table(
        ["category", "cases", "denied naming the field", "not (see Findings)"],
        [[name, total, good, total - good] for name, (total, good) in sorted(per_category.items())]
        + [
            [
                "**total**",
                sum(c[0] for c in per_category.values()),
                sum(c[1] for c in per_category.values()),
                sum(c[0] - c[1] for c in per_category.values()),
            ]
        ],  # fmt: skip
    )
    detail = md_table(
        ["case", "outcome", "denial message (excerpt)"],
        [[name.split(": ", 1)[1], row["outcome"], row["message"]] for name, row in cases.items()],
    )
    note = f"Corpus size recorded by the run: {sizes.get('total', len(cases))} cases."
    return f"{overview}\n\n{note}\n\n<details><summary>Every case</summary>\n\n{detail}\n\n</details>"


def block_fuzz(summary: dict[str, Any]) -> str:
    rows = []
    for strategy, statuses in summary.get("fuzz", {}).items():
        if all(key.isdigit() for key in statuses):
            total = sum(statuses.values())
            rows.append([strategy, total, ", ".join(f"HTTP {k}: {v}" for k, v in statuses.items())])
        else:
            rows.append([strategy, "", ", ".join(f"{k}: {v}" for k, v in statuses.items())])
    return md_table(["property / probe", "examples", "answers"], rows)


def block_rows(summary: dict[str, Any], section: str, first: str) -> str:
    data = summary.get(section, {})
    if not data:
        return "_(not recorded in this run)_"
    columns: list[str] = []
    for row in data.values():
        for key in row:
            if key not in columns:
                columns.append(key)
    if any(set(row) != set(columns) for row in data.values()):
        # Rows that measure different things: one "figures" cell each instead of a sparse wide table.
        return md_table(
            [first, "figures"],
            [[label, "; ".join(f"{k}: {v}" for k, v in row.items())] for label, row in data.items()],
        )
    return md_table([first, *columns], [[label, *(row.get(c, "") for c in columns)] for label, row in data.items()])


def block_bench(bench_dir: Path) -> str:
    parts = []
    webhook = _load(bench_dir / "soak_webhook.json")
    if webhook:
        lat, rss = webhook["latency_ms"], webhook["rss_mb"]
        parts.append(
            md_table(
                ["webhook soak", "value"],
                [
                    [
                        "command",
                        f"`python bench/soak_webhook.py --duration {webhook['parameters']['duration']:g} "
                        f"--rate {webhook['parameters']['rate']:g}`",
                    ],
                    ["admissions (measured after warm-up)", f"{webhook['requests']} ({webhook['measured']})"],
                    ["achieved rate", f"{webhook['achieved_rate']}/s"],
                    ["mix (measured)", ", ".join(f"{k} {v}" for k, v in sorted(webhook["by_kind"].items()))],
                    ["errors", webhook["errors"]],
                    [
                        "latency p50 / p90 / p99 / max",
                        f"{lat['p50']:.2f} / {lat['p90']:.2f} / {lat['p99']:.1f} / {lat['max']:.1f} ms",
                    ],
                    ["server RSS after warm-up / end / max", f"{rss['after_warmup']} / {rss['end']} / {rss['max']} MB"],
                    ["RSS every 30 s", " ".join(str(v) for v in rss["every_30s"])],
                    ["load average at start", " ".join(f"{v:.2f}" for v in webhook["machine"]["loadavg_at_start"])],
                    ["verdict", "ok" if all(webhook["invariants"].values()) else f"BROKEN {webhook['invariants']}"],
                ],
            )  # fmt: skip
        )
    sidecar = _load(bench_dir / "soak_sidecar.json")
    if sidecar:
        parts.append(
            md_table(
                ["sidecar soak", "value"],
                [
                    ["command", f"`python bench/soak_sidecar.py --cycles {sidecar['parameters']['cycles']}`"],
                    ["refresh cycles (after warm-up)", sidecar["cycles_measured"]],
                    ["wall seconds", sidecar["samples"][-1]["seconds"] if sidecar["samples"] else ""],
                    ["rotations delivered", sidecar["rotations"]],
                    ["RSS after warm-up / end", f"{sidecar['rss_mb']['after_warmup']} / {sidecar['rss_mb']['end']} MB"],
                    ["open fds after warm-up / end", f"{sidecar['fds']['after_warmup']} / {sidecar['fds']['end']}"],
                    ["AWS calls", ", ".join(f"{k} {v}" for k, v in sidecar["api_calls"].items())],
                    ["values found in the sidecar's log", len(sidecar["leaked"])],
                    ["load average at start", " ".join(f"{v:.2f}" for v in sidecar["machine"]["loadavg_at_start"])],
                    ["verdict", "ok" if all(sidecar["invariants"].values()) else f"BROKEN {sidecar['invariants']}"],
                ],
            )  # fmt: skip
        )
    kills = _load(bench_dir / "kill_swap.json")
    if kills:
        rows = []
        for label, part in (("writer (`swap_directory` in a forked process)", kills["writer"]),
                            ("`python -m fetcher sidecar`", kills["sidecar"])):  # fmt: skip
            rows.append([label, part.get("kills"), part.get("landed_mid_swap", ""), part.get("seconds", ""),
                         "yes" if part["ok"] else "NO"])  # fmt: skip
        parts.append(md_table(["kill -9 target (bench/kill_swap.py)", "kills", "left swap traces", "seconds",
                               "always whole + cleaned"], rows))  # fmt: skip
    machine = (webhook or sidecar or kills or {}).get("machine")
    if machine:
        parts.append(
            f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['mem_total_mb']} MB RAM, "
            f"Python {machine['python']}, kernel {machine['kernel']}; shared with other jobs while measuring."
        )
    return "\n\n".join(parts) if parts else "_(no bench results found)_"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def render(doc: str, blocks: dict[str, str]) -> str:
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN generated:{name} -->).*?(<!-- END generated:{name} -->)", re.S)
        if not pattern.search(doc):
            raise SystemExit(f"docs/reliability.md has no generated:{name} block")
        doc = pattern.sub(lambda m, body=body: f"{m.group(1)}\n{body}\n{m.group(2)}", doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", type=Path, help="use this summary JSON instead of running the suite")
    parser.add_argument("--slow", action="store_true", help="run the -m slow tests too")
    parser.add_argument("--bench-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--save-summary", type=Path, help="keep the run's summary JSON here (for --summary)")
    args = parser.parse_args(argv)
    if args.summary:
        summary = json.loads(args.summary.read_text())
        outcomes = summary.get("_outcomes", {})
    else:
        summary, outcomes = run_suite(args.slow, args.save_summary)
    leak = summary.get("leak_scan", {}).get("session", {})
    run_line = (
        f"Tests in this run: {outcomes.get('passed', '?')} passed, {outcomes.get('failed', '?')} failed, "
        f"{outcomes.get('error', '?')} errors ({'default and slow' if args.slow else 'default run'})."
        if outcomes
        else "Tests: figures from a saved summary without outcome counts."
    )
    blocks = {
        "run": run_line,
        "corpus": block_corpus(summary),
        "fuzz": block_fuzz(summary),
        "init_faults": block_rows(summary, "init_faults", "fault (init, 2 attempts unless noted)"),
        "sidecar_faults": block_rows(summary, "sidecar_faults", "sidecar scenario"),
        "crash": block_rows(summary, "crash_safety", "kill loop")
        + "\n\n"
        + block_rows(summary, "concurrent_reader", "readers racing a writer"),
        "security": block_rows(summary, "security", "check")
        + "\n\n"
        + block_rows(summary, "leak_probes", "leak probe"),
        "leaks": md_table(
            ["secret values tracked", "outputs scanned", "kinds of output", "bytes scanned"],
            [[leak.get("secret_values"), leak.get("exposures"), leak.get("exposure_kinds"), leak.get("bytes_scanned")]],
        ),  # fmt: skip
        "bench": block_bench(args.bench_dir),
    }
    DOC.write_text(render(DOC.read_text(), blocks))
    print(f"rewrote {DOC.relative_to(REPO_ROOT)}: {', '.join(blocks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
