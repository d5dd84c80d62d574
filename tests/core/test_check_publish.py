"""tools/check_publish.py refuses a publish while the registry metadata is incomplete, and passes once filled in.

No host needed. The repository itself cannot be published today (no public address exists for the registry's
Repository and Icon URLs, and the version's changelog section is not dated), so the check must say so; a copy of
the repository with those filled in must pass. Each other rule is tripped on a broken copy of the metadata.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "check_publish.py"


def _tool():
    name = "vista_check_publish"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TOOL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


check = _tool()


def run_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(root)], capture_output=True, text=True, timeout=120)


def pyproject(root: Path = ROOT) -> dict:
    return check.tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture
def copy(tmp_path) -> Path:
    """The working tree's files (tracked and new, as git sees them) in a fresh git repository."""
    if shutil.which("git") is None:
        pytest.fail("git is needed: comfy-cli's pack (and this check) read the git-tracked files")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split()
    dest = tmp_path / "vista"
    for name in listed:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "add", "-A"], check=True)
    return dest


def fill_in(root: Path) -> None:
    """What the publisher does at publish time (CONTRIBUTING.md, 'Publishing'), with placeholder addresses."""
    path = root / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("\n[build-system]", '\n[project.urls]\nRepository = "https://example.com/vista"\n\n[build-system]')
    text = re.sub(r'^Icon = .*$', 'Icon = "https://example.com/vista/raw/main/web/icon.svg"', text, flags=re.M)
    path.write_text(text, encoding="utf-8")
    version = pyproject(root)["project"]["version"]
    changelog = root / "CHANGELOG.md"
    changelog.write_text(re.sub(rf"^## \[{re.escape(version)}\] - unreleased$", f"## [{version}] - 2027-01-01",
                                changelog.read_text(encoding="utf-8"), flags=re.M), encoding="utf-8")


def test_the_repository_is_not_publishable_until_the_addresses_exist():
    """Today's repository: the check names each missing piece and fails (a publish must not go out like this)."""
    urls = pyproject()["project"].get("urls") or {}
    done = run_check(ROOT)
    if "Repository" in urls:  # filled in at publish time: then the whole check must pass
        assert done.returncode == 0, done.stdout
        return
    assert done.returncode == 1, done.stdout
    assert "[project.urls] Repository is missing or not an https URL" in done.stdout
    assert "[tool.comfy] Icon 'web/icon.svg' is not an https URL" in done.stdout
    assert "not ready to publish" in done.stdout


def test_a_filled_in_copy_passes(copy):
    assert run_check(copy).returncode == 1
    fill_in(copy)
    done = run_check(copy)
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip() == "check_publish: ready to publish"


def test_the_archive_leaves_out_development_files_and_keeps_what_users_need():
    """comfy node pack ships git-tracked files minus .comfyignore: no bench/, tests/, .ci/; the pack, its web/,
    workflows and the user tools are in: 6.2 MB of the 15 MB tracked (5 MB of it the LPIPS AlexNet weights)."""
    assert check.archive_gaps(ROOT) == []
    tracked, ignored = check.shipped_files(ROOT)
    shipped = sorted(set(tracked) - set(ignored))
    assert not [f for f in shipped if f.startswith(("bench/", "tests/", ".ci/"))]
    assert {"tools/run_workflow.py", "tools/convert_lpips.py", "__init__.py", "LICENSE"} <= set(shipped)
    assert all(f in shipped for f in tracked if f.startswith(("nodes/", "core/", "web/", "workflows/")))
    assert sum((ROOT / f).stat().st_size for f in shipped) < 7e6


def test_each_rule_trips(tmp_path):
    data = pyproject()
    data["project"]["urls"] = {"Repository": "https://example.com/vista"}
    data["tool"]["comfy"]["Icon"] = "https://example.com/icon.svg"
    assert check.metadata_gaps(data, ROOT) == []

    def gaps_with(section: str, key: str, value) -> str:
        broken = {**data, "project": dict(data["project"]), "tool": {"comfy": dict(data["tool"]["comfy"])}}
        (broken["project"] if section == "project" else broken["tool"]["comfy"])[key] = value
        return "\n".join(check.metadata_gaps(broken, ROOT))

    assert "contains 'ComfyUI'" in gaps_with("project", "name", "comfyui-vista")
    assert "node id rules" in gaps_with("project", "name", "vista--nodes")
    assert "not X.Y.Z" in gaps_with("project", "version", "0.5")
    assert "not an SPDX expression" in gaps_with("project", "license", {"file": "LICENSE"})
    assert "does not exist" in gaps_with("project", "license-files", ["LICENSE", "COPYING"])
    assert "Repository is missing" in gaps_with("project", "urls", {"Repository": "http://example.com/vista"})
    assert "Icon 'web/icon.svg' is not an https URL" in gaps_with("comfy", "Icon", "web/icon.svg")
    assert "PublisherId is missing" in gaps_with("comfy", "PublisherId", "")

    dated = "## [0.5.0] - 2027-01-01\n### Added\n- x\n\n## [0.4.0] - 2026-11-23\n"
    assert check.changelog_gaps("0.5.0", dated) == []
    assert "not dated" in "\n".join(check.changelog_gaps("0.5.0", dated.replace("2027-01-01", "unreleased")))
    assert "must agree" in "\n".join(check.changelog_gaps("0.4.0", dated))
    assert "entries under [Unreleased]" in "\n".join(check.changelog_gaps("0.5.0", "## [Unreleased]\n- y\n\n" + dated))
    assert check.changelog_gaps("0.5.0", "## [Unreleased]\n\n" + dated) == []


def test_a_missing_or_leaky_comfyignore_trips(copy):
    (copy / ".comfyignore").write_text("tests/\n")
    subprocess.run(["git", "-C", str(copy), "add", "-A"], check=True)
    gaps = "\n".join(check.archive_gaps(copy))
    assert "would ship bench/" in gaps and "would ship .ci/" in gaps and "tests/" not in gaps
    (copy / ".comfyignore").write_text("bench/\ntests/\n.ci/\nworkflows/\ntools/run_workflow.py\n")
    gaps = "\n".join(check.archive_gaps(copy))
    assert "leaves out tools/run_workflow.py" in gaps and "leaves out workflows/panorama_mad.json" in gaps
    (copy / ".comfyignore").unlink()
    assert check.archive_gaps(copy) == [".comfyignore is missing: `comfy node pack` would ship bench/, tests/ and .ci/"]
