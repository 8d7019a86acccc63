"""Repository contracts: CI runs the README's test command verbatim."""

import re

from conftest import ROOT


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    commands = _readme_commands()
    test_cmd = next(c for c in commands if "pytest" in c)
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines, f".ci/run must run the README test command verbatim: {test_cmd!r}"


def test_readme_main_job_points_at_existing_scripts():
    main = next(c for c in _readme_commands() if "pytest" not in c)
    for script in re.findall(r"python ([\w/]+\.py)", main):
        assert (ROOT / script).is_file(), script
