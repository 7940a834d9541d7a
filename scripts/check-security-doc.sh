#!/usr/bin/env bash
# Checks that every test docs/SECURITY.md names exists: each `path::test_name` (and each
# `::test_name` after it, which means the same file) must be a function in that file, each named
# file must exist, and each chaos scenario (`tests/chaos` scenario `name`) must be one the chaos
# suite runs. CI runs this (.ci/run), so a renamed test cannot leave a row pointing at nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import pathlib, re, sys

doc = pathlib.Path("docs/SECURITY.md").read_text()
chaos = pathlib.Path("tests/chaos/src/scenarios.rs").read_text()
scenarios = {re.sub(r"(?<!^)(?=[A-Z])", "-", v).lower()
             for v in re.findall(r"^\s+([A-Z][A-Za-z]+),$", chaos.split("pub enum Scenario")[1].split("}")[0], re.M)}
problems, checked = [], 0
for n, line in enumerate(doc.splitlines(), 1):
    if not line.startswith("| ") or line.startswith("| #"):
        continue
    current = None
    for ref in re.findall(r"`([^`]+)`", line):
        m = re.fullmatch(r"((?:[\w.-]+/)+[\w.-]+\.rs)?::(\w+)", ref)
        if m:
            path, name = m.group(1) or current, m.group(2)
            if path is None:
                problems.append(f"line {n}: `{ref}` has no file before it")
                continue
            current = path
            p = pathlib.Path(path)
            checked += 1
            if not p.exists():
                problems.append(f"line {n}: {path} does not exist")
            elif not re.search(rf"\bfn {name}\b", p.read_text()):
                problems.append(f"line {n}: no fn {name} in {path}")
            continue
        if re.fullmatch(r"(?:[\w.-]+/)+[\w.*-]+\.rs", ref):
            current = ref
            checked += 1
            if "*" not in ref and not pathlib.Path(ref).exists():
                problems.append(f"line {n}: {ref} does not exist")
    for name in re.findall(r"`tests/chaos` scenarios? ((?:`[\w-]+`(?: and |, )?)+)", line):
        for s in re.findall(r"`([\w-]+)`", name):
            checked += 1
            if s not in scenarios:
                problems.append(f"line {n}: no chaos scenario {s} (there are {sorted(scenarios)})")
for p in problems:
    print(f"docs/SECURITY.md {p}", file=sys.stderr)
print(f"[check-security-doc] {checked} references, {len(problems)} missing")
sys.exit(1 if problems else 0)
PY
