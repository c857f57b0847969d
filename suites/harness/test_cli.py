"""The command lines users type: the README's, verbatim (with --collect-only where a run would take long),
every option with its value after a space or after `=`, --list-configs, --lf, one dependency list, and
pytest's per-test timeout leaving room for the boot that --boot-timeout allows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MINIMAX_SUITE_SESSION"))}
    env["SKIP_BROWSER"] = "1"
    env["VENV"] = str(Path(sys.executable).parent.parent.relative_to(ROOT)) \
        if Path(sys.executable).is_relative_to(ROOT) else str(Path(sys.executable).parent.parent)
    return env


def readme_commands() -> list[str]:
    """Every command line of the README that runs the suite: code-block lines (continuations joined) and
    inline `...` commands, starting with ./suite run|test, pytest, or running scripts/gpu-run.sh."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"\s+#.*$", "", cmd).strip()
            if cmd and not cmd.startswith("#"):
                lines.append(cmd)
    lines += re.findall(r"`((?:\./suite (?:run|test)|pytest)\b[^`]*)`", text)
    keep = [c for c in lines if re.search(r"(^|\s)(\./suite (run|test)|pytest|bash scripts/gpu-run\.sh)(\s|$)", c)]
    return list(dict.fromkeys(keep))


def _as_runnable(cmd: str, report_dir: Path) -> list[str]:
    """The README line as it runs here: its environment assignments that install another vLLM (VENV=,
    VLLM_SPEC=, ...) and gpu-run.sh's carried kit are this machine's .venv instead; the pytest arguments
    are the README's, verbatim, plus --collect-only and a report folder of the test's own."""
    argv = shlex.split(cmd)
    while argv and re.match(r"^[A-Z_]+=", argv[0]):
        argv.pop(0)
    lists = {"--help", "--list-configs"} & set(argv)  # print and exit: nothing to collect
    tail = [] if lists else ["--collect-only", "-q", f"--report-dir={report_dir}"]
    if argv[:2] == ["bash", "scripts/gpu-run.sh"]:
        return [sys.executable, "-m", "pytest", "-c", "pyproject.toml", *argv[2:], *tail]
    if argv[0] == "pytest":
        return [str(VENV_BIN / "pytest"), *argv[1:], *tail]
    return [*argv, *tail]


def test_readme_lists_the_commands_this_test_runs():
    cmds = readme_commands()
    assert any(c.startswith("./suite run -m parser") for c in cmds), cmds
    assert "pytest -m gpu" in cmds and any("gpu-run.sh" in c for c in cmds), cmds
    assert any("--golden-dir" in c for c in cmds), "the README shows --golden-dir with a folder"


@pytest.mark.slow
@pytest.mark.parametrize("cmd", readme_commands())
def test_readme_command_runs_verbatim(cmd, tmp_path):
    argv = _as_runnable(cmd, tmp_path / "reports")
    cmd_text = cmd.replace("/path/to/cases", str(tmp_path / "cases"))
    if "reports/live/records.jsonl" in cmd:  # a live run's records: the ones the harness keeps
        argv = [a.replace("reports/live/records.jsonl", str(ROOT / "suites/harness/data/live-tiny/records.jsonl"))
                for a in argv]
    if "/path/to/cases" in cmd:
        (tmp_path / "cases").mkdir()
        case = next((ROOT / "golden" / "cases").glob("*.yaml"))
        (tmp_path / "cases" / case.name).write_text(case.read_text())
        argv = [a.replace("/path/to/cases", str(tmp_path / "cases")) for a in argv]
    p = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{cmd_text}\n{out[-4000:]}"
    assert "unrecognized arguments" not in out
    if "--help" in argv:
        assert "MiniMax-M2 conformance suite" in out and "--golden-dir=DIR" in out
    elif "--list-configs" in argv:
        assert "launch configurations" in out and "tp4 " in out
    else:
        assert re.search(r"\d+(/\d+)? tests? collected", out), out[-2000:]


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """Folders and files outside the project, as users pass them."""
    base = tmp_path_factory.mktemp("outside")
    cases = base / "cases"
    cases.mkdir()
    case = next((ROOT / "golden" / "cases").glob("*.yaml"))
    (cases / case.name).write_text(case.read_text())
    for d in ("known", "reports", "history", "recorded"):
        (base / d).mkdir()
    from fixtures.tokenizer import write_tokenizer

    write_tokenizer(base / "tok")
    return base


PATH_OPTIONS = [("--golden-dir", "cases"), ("--known-dir", "known"), ("--report-dir", "reports"),
                ("--bench-history", "history"), ("--record-golden", "recorded"), ("--tokenizer", "tok")]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["space", "equals"])
def test_options_take_a_folder_after_a_space_or_equals(outside, form):
    """Every path option at once, each naming an existing folder outside the project: ./suite run."""
    args = []
    for opt, name in PATH_OPTIONS:
        value = str(outside / name)
        args += [opt, value] if form == "space" else [f"{opt}={value}"]
    report = outside / "reports" / "report.html"
    report.unlink(missing_ok=True)
    p = subprocess.run(["./suite", "run", "-m", "parser", *args, "--collect-only"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert f"rootdir: {ROOT}" in out, out[:2000]
    n_cases = len(list((outside / "cases").glob("*.yaml")))
    m = re.search(r"(\d+)/(\d+) tests collected", out)
    assert m and int(m.group(1)) < 200, out[-1500:]  # one golden case, not the project's corpus
    assert report.is_file(), "--report-dir was not used"
    assert n_cases == 1


def test_list_configs_prints_every_configuration_with_gpus_and_flags():
    from fixtures.configs import load_configs

    p = subprocess.run([sys.executable, "-m", "pytest", "--list-configs"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    for cid, cfg in load_configs().items():
        row = next((ln for ln in p.stdout.splitlines() if ln.split()[:1] == [cid]), None)
        assert row is not None, (cid, p.stdout)
        assert row.split()[1] == str(cfg.gpus), row
        assert shlex.join(cfg.flags()) in p.stdout, cid
    assert "collected" not in p.stdout  # it lists and exits


def test_last_failed_works_and_its_cache_stays_out_of_git():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "no:cacheprovider" not in ini["addopts"]
    assert "-p fixtures.plugin" in ini["addopts"]
    p = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert "--lf, --last-failed" in p.stdout
    ignored = subprocess.run(["git", "check-ignore", "-q", ".pytest_cache/v/cache/lastfailed"], cwd=ROOT)
    assert ignored.returncode == 0, ".pytest_cache is not ignored by git"


def test_one_dependency_list():
    """pyproject.toml's dependencies are requirements/test.txt (setuptools reads the file): one list."""
    from packaging.requirements import Requirement

    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dependencies" not in doc["project"] and "dependencies" in doc["project"]["dynamic"]
    assert doc["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements/test.txt"]
    reqs = [ln.split("#")[0].strip() for ln in (ROOT / "requirements" / "test.txt").read_text().splitlines()]
    names = {Requirement(r).name.lower() for r in reqs if r}
    assert {"pytest", "pytest-html", "pytest-metadata", "pytest-timeout", "pytest-xdist", "openai",
            "check-jsonschema"} <= names


PROBE = '''
def pytest_collection_finish(session):
    for item in session.items:
        m = item.get_closest_marker("timeout")
        print("TIMEOUT", item.nodeid, m.args[0] if m and m.args else (m.kwargs.get("timeout") if m else None))
'''


@pytest.mark.parametrize("extra,server_timeout,parser_timeout", [
    ([], 900 + 600 + 60, None),                       # ini timeout 900 + the CPU boot allowance 600
    (["--boot-timeout", "2000"], 900 + 2000 + 60, None),
    (["-o", "timeout=0"], None, None),                  # no pytest timeout: nothing added
])
def test_pytest_timeout_leaves_room_for_the_boot(tmp_path, extra, server_timeout, parser_timeout):
    (tmp_path / "timeout_probe.py").write_text(textwrap.dedent(PROBE))
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "timeout_probe", "--collect-only", "-q",
                        f"--report-dir={tmp_path / 'r'}", "suites/server/test_launch.py",
                        "suites/harness/test_golden_format.py", *extra],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    got = dict(ln.split()[1:3] for ln in p.stdout.splitlines() if ln.startswith("TIMEOUT "))
    assert got, p.stdout[-3000:] + p.stderr[-3000:]
    launch = [v for k, v in got.items() if "test_launch" in k]
    other = [v for k, v in got.items() if "test_golden_format" in k]
    assert launch and all(v == str(server_timeout if server_timeout is None else float(server_timeout))
                          for v in launch), got
    assert all(v == str(parser_timeout) for v in other), got
