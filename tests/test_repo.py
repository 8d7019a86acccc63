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



def _readme_layout() -> dict[str, list[str]]:
    """{folder: the module names its lines list} of the README's Layout block."""
    block = re.search(r"## Layout\n\n```\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S).group(1)
    layout: dict[str, list[str]] = {}
    folder = ""
    for line in block.splitlines():
        folder = line.split()[0] if not line.startswith(" ") else folder
        names = re.split(r"\s{3,}", line[len(folder):].strip())[0]  # before the "(what it is)" column
        layout.setdefault(folder, []).extend(n.strip() for n in re.sub(r"\([^)]*\)", "", names).split(","))
    return layout


def test_readme_layout_matches_the_tree():
    layout = _readme_layout()
    for folder in layout:
        assert (ROOT / folder).exists(), folder
    for package in ("hrssm/", "hrssm/data/"):
        modules = {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
        assert set(filter(None, layout[package])) == modules, package
    folders = {p.name + "/" for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists() or p.name in (
        "recipes", "tools", "benchmarks", "docs", "tests")}
    assert folders <= set(layout), folders - set(layout)


def test_the_package_declares_what_it_imports_and_its_license():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[; ]", dep)[0].lower() for dep in project["dependencies"]}
    assert {"tensorboard", "pandas", "scipy"} <= names  # the default tracker; metadata.csv; TCAV's t-test
    assert project["license"]["text"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    gpu = project["optional-dependencies"]["gpu"]
    assert any(d.startswith("xformers>=") for d in gpu) and any(d.startswith("torch>=") for d in gpu)
