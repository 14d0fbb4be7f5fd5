"""What a new user meets first: the README's commands, CI, and a core without torch."""
import re
import subprocess
import sys
from pathlib import Path

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
