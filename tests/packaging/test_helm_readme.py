"""The chart's README.md: generated from values.yaml's `# --` comments, kept in sync."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.support.helm import CHART_DIR, ROOT

GENERATOR = ROOT / "helm" / "generate_readme.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_readme", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def check(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )


def test_readme_is_up_to_date() -> None:
    result = check(GENERATOR)
    assert result.returncode == 0, result.stderr


def test_check_detects_a_stale_readme(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "helm", tmp_path / "helm")
    script = tmp_path / "helm" / "generate_readme.py"
    values = tmp_path / "helm" / "budget-exporter" / "values.yaml"
    values.write_text(values.read_text().replace("# -- Image tag.", "# -- The image tag."))
    result = check(script)
    assert result.returncode == 1 and "README.md is out of date" in result.stderr
    subprocess.run([sys.executable, str(script)], check=True)
    assert check(script).returncode == 0
    assert (
        "| `image.tag` | string | the chart's appVersion | The image tag. |"
        in (tmp_path / "helm" / "budget-exporter" / "README.md").read_text()
    )


def test_parser_follows_the_helm_docs_conventions() -> None:
    text = """\
# A plain comment documents nothing.
top: 1
# -- Documented parent.
# It continues here.
parent:
  # -- (int) A child.
  # @default -- computed
  child: null
  undocumented: x
  # -- Items | with a pipe.
  items:
    - name: a
      # -- inside a list item: not a key of the values
      nested: b

# -- Separated by a blank line: not attached.

after: 2
"""
    entries = generator().parse(text)
    assert [(e.key, e.description, e.default, e.type) for e in entries] == [
        ("parent", "Documented parent. It continues here.", None, None),
        ("parent.child", "A child.", "computed", "int"),
        ("parent.items", "Items | with a pipe.", None, None),
    ]
    table = generator().table(text)
    assert "| `parent.child` | int | computed | A child. |" in table
    assert (
        '| `parent.items` | list | `[{"name":"a","nested":"b"}]` | Items \\| with a pipe. |'
        in table
    )


def undocumented(values: dict[str, Any], documented: set[str], prefix: str = "") -> list[str]:
    """Keys neither documented themselves nor under a documented key."""
    missing = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in documented:
            continue
        if isinstance(value, dict) and value:
            missing.extend(undocumented(value, documented, f"{path}."))
        else:
            missing.append(path)
    return missing


def test_every_value_is_documented() -> None:
    text = (CHART_DIR / "values.yaml").read_text()
    documented = {e.key for e in generator().parse(text)}
    assert undocumented(yaml.safe_load(text), documented) == []
    assert undocumented({"a": {"b": 1, "c": {"d": 2}}}, {"a.c"}) == ["a.b"]


def test_readme_has_install_upgrade_uninstall() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    for heading, command in (
        ("## Install", "helm install budget-exporter ./helm/budget-exporter"),
        ("## Upgrade", "helm upgrade budget-exporter ./helm/budget-exporter"),
        ("## Uninstall", "helm uninstall budget-exporter"),
    ):
        assert heading in readme and command in readme
    assert readme.index("## Install") < readme.index("## Upgrade") < readme.index("## Uninstall")
    assert '| `webConfig.probeMode` | string | `"auto"` |' in readme
    assert "{{ values_table }}" not in readme
