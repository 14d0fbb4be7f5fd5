"""What a new user meets first: the README's commands, CI, a core without torch, and the tox
matrix's oldest pins and compare step."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_quick_start_is_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands)


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = quick_start_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_core_imports_without_torch():
    """impls, the numpy backend, data, training and the CLI import with torch blocked."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import impls, bench.cli, bench.train.data, bench.train.loop, bench.train.losses, bench.train.optim\n"
            "status = impls.available()\n"
            "assert status['numpy'] and not status['torch'], status\n"
            "assert '.[torch]' in status['torch'].reason, status['torch'].reason\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _declared_lower_bounds() -> dict[str, str]:
    """name -> lower bound of every requirement `pip install .[cpu,test]` brings (the cpu extra's
    own `rnnbench[...]` expanded): what `tox -e py311-cpu-oldest` pins."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
        import tomli as tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras, todo, requirements = set(), ["cpu", "test"], list(project["dependencies"])
    while todo:
        extra = todo.pop()
        if extra in extras:
            continue
        extras.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "rnnbench":
                todo.extend(requirement.extras)
            else:
                requirements.append(text)
    bounds: dict[str, set[str]] = {}
    for text in requirements:
        requirement = Requirement(text)
        lower = [s.version for s in requirement.specifier if s.operator in (">=", "==")]
        assert len(lower) == 1, f"{text}: one lower bound (>= or ==) expected"
        bounds.setdefault(canonicalize_name(requirement.name), set()).update(lower)
    # one bound per name: scipy is in the core and the numba extra, and both must say the same
    assert all(len(versions) == 1 for versions in bounds.values()), bounds
    return {name: versions.pop() for name, versions in bounds.items()}


def test_oldest_constraints_pin_exactly_the_declared_lower_bounds():
    """constraints/oldest.txt (tox -e py311-cpu-oldest) is the proof of pyproject's lower bounds:
    the two cannot drift. Raise a bound in both."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints" / "oldest.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            name = canonicalize_name(requirement.name)
            assert name not in pins, f"{name} pinned twice"
            pins[name] = spec.version
    assert pins == _declared_lower_bounds()


def test_tox_compare_orders_the_bench_folders_base_first(tmp_path, capsys):
    from bench.tox_compare import DEFAULT_BASE, EXIT_USAGE, base_first, main, run_folders

    runs, out = tmp_path / "tox", tmp_path / "tox" / "compare"
    for name in ("py313-core-bench", "compare", "not-a-run"):
        (runs / name).mkdir(parents=True)
    (runs / "py313-core-bench" / "results.csv").write_text("")
    (out / "results.csv").write_text("")  # even a run-looking output folder is no input
    assert main([str(runs), "--out", str(out)]) == EXIT_USAGE  # one folder: nothing to compare
    assert "found py313-core-bench" in capsys.readouterr().err

    for name in (DEFAULT_BASE, "py310-core-bench"):
        (runs / name).mkdir()
        (runs / name / "results.csv").write_text("")
    folders = run_folders(runs, out)
    assert [p.name for p in folders] == ["py310-core-bench", DEFAULT_BASE, "py313-core-bench"]
    ordered, note = base_first(folders, None)
    assert [p.name for p in ordered] == [DEFAULT_BASE, "py310-core-bench", "py313-core-bench"] and note is None
    ordered, note = base_first(folders[::2], None)  # no default base: the first by name, said so
    assert [p.name for p in ordered] == ["py310-core-bench", "py313-core-bench"] and DEFAULT_BASE in note
    ordered, _ = base_first(folders, "py313-core-bench")
    assert ordered[0].name == "py313-core-bench"
    with pytest.raises(ValueError, match="no such run folder"):
        base_first(folders, "py312-core-bench")
