"""Is the pack ready for ``comfy node publish`` (the Comfy Registry)? Lists what is missing; exit 1 if anything is.

Usage::

    python tools/check_publish.py [ROOT]      # ROOT: the repository (default: this checkout)

Run it before every publish (CONTRIBUTING.md, "Publishing", is the checklist it backs). It checks, offline:

* ``[project] name``: the registry's node id rules (docs.comfy.org/registry/specifications: under 100 characters,
  letters, digits, ``-``, ``_``, ``.``, no two special characters in a row, starting with a letter) and no "ComfyUI"
  in it, which the registry asks for;
* ``version`` is X.Y.Z and CHANGELOG.md's newest section is ``## [X.Y.Z] - YYYY-MM-DD`` (dated: released), with
  no ``## [Unreleased]`` entries above it — what users install must be what the changelog says;
* ``[project.urls] Repository`` and ``[tool.comfy] Icon`` are https URLs: the registry requires both, and the
  public address does not exist until publish time (none is invented in the repository meanwhile);
* ``[tool.comfy] PublisherId`` and ``DisplayName`` are set;
* ``license`` is an SPDX expression (PEP 639; the TOML-table form is deprecated by setuptools) and every
  ``license-files`` entry exists;
* ``.comfyignore`` keeps bench/, tests/ and .ci/ out of the archive and ships every file users need (the pack's
  code, web/, workflows/, the tools the README tells users to run), as comfy-cli's pack reads it (git-tracked
  files minus its gitignore-style patterns; needs git).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*")
SPDX_ID = re.compile(r"[A-Za-z0-9.+-]+")
NOT_SHIPPED = ("bench/", "tests/", ".ci/")
# What a user of the registry's archive needs besides the pack's code folders (nodes/, core/, web/, workflows/).
SHIPPED_FILES = ("__init__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE", "NOTICE",
                 "CHANGELOG.md", "core/guidance/data/lpips_v0.1_alex.safetensors", "tools/run_workflow.py",
                 "tools/comfy_api_format.py", "tools/draw_thumbnails.py", "tools/make_test_checkpoint.py",
                 "tools/convert_lpips.py")
SHIPPED_FOLDERS = ("nodes/", "core/", "web/", "workflows/")


def _is_https(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"https://[^\s/]+\.[^\s/]+(/\S*)?", value) is not None


def metadata_gaps(pyproject: dict, root: Path) -> list[str]:
    """What pyproject.toml lacks for the registry."""
    project, comfy = pyproject.get("project", {}), pyproject.get("tool", {}).get("comfy", {})
    out = []
    name = str(project.get("name", ""))
    if not (NAME_RULE.fullmatch(name) and len(name) < 100):
        out.append(f"[project] name {name!r} breaks the registry's node id rules (letters, digits, single '-', '_' "
                   f"or '.' between them, starting with a letter, under 100 characters)")
    if "comfyui" in name.lower():
        out.append(f"[project] name {name!r} contains 'ComfyUI', which the registry asks to leave out")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(project.get("version", ""))):
        out.append(f"[project] version {project.get('version')!r} is not X.Y.Z (semantic versioning)")
    repository = (project.get("urls") or {}).get("Repository")
    if not _is_https(repository):
        out.append("[project.urls] Repository is missing or not an https URL: add the public repository's address "
                   "(the registry requires it)")
    if not _is_https(comfy.get("Icon")):
        out.append(f"[tool.comfy] Icon {comfy.get('Icon')!r} is not an https URL: point it at web/icon.svg in the "
                   f"public repository (the registry shows the icon from its URL)")
    for key in ("PublisherId", "DisplayName"):
        if not str(comfy.get(key, "")).strip():
            out.append(f"[tool.comfy] {key} is missing")
    license_ = project.get("license")
    if not (isinstance(license_, str) and all(SPDX_ID.fullmatch(t) or t in ("AND", "OR", "WITH", "(", ")")
                                              for t in license_.replace("(", " ( ").replace(")", " ) ").split())):
        out.append(f"[project] license {license_!r} is not an SPDX expression (e.g. \"GPL-3.0-only\"; PEP 639)")
    for path in project.get("license-files") or []:
        if not (root / path).is_file():
            out.append(f"[project] license-files names {path}, which does not exist")
    return out


def changelog_gaps(version: str, changelog: str) -> list[str]:
    """The version must be the changelog's newest section, dated, with nothing left under [Unreleased]."""
    sections = re.findall(r"^## \[([^\]]+)\](.*)$", changelog, flags=re.M)
    if not sections:
        return ["CHANGELOG.md has no '## [X.Y.Z] - YYYY-MM-DD' section"]
    out = []
    released = [(v, rest) for v, rest in sections if v.lower() != "unreleased"]
    if sections[0][0].lower() == "unreleased":
        body = changelog.split(f"## [{sections[0][0]}]", 1)[1].split("\n## [", 1)[0]
        if re.search(r"^\s*[-*] ", body, flags=re.M):
            out.append("CHANGELOG.md has entries under [Unreleased]: move them into the version's section")
    if not released or released[0][0] != version:
        newest = released[0][0] if released else None
        out.append(f"CHANGELOG.md's newest version is {newest!r}, pyproject.toml's {version!r}: they must agree")
    elif not re.fullmatch(r" - \d{4}-\d{2}-\d{2}\s*", released[0][1]):
        out.append(f"CHANGELOG.md's section [{version}] is not dated ('## [{version}] - YYYY-MM-DD'): date it on "
                   f"publishing")
    return out


def shipped_files(root: Path) -> tuple[list[str], list[str]]:
    """(git-tracked files, those .comfyignore leaves out), as comfy-cli's ``comfy node pack`` decides them."""
    tracked = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=True)
    ignored = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--ignored",
                              f"--exclude-from={root / '.comfyignore'}"], capture_output=True, text=True, check=True)
    return tracked.stdout.split(), ignored.stdout.split()


def archive_gaps(root: Path) -> list[str]:
    """What .comfyignore ships that it should not, or leaves out that users need."""
    if not (root / ".comfyignore").is_file():
        return [".comfyignore is missing: `comfy node pack` would ship bench/, tests/ and .ci/"]
    tracked, ignored = shipped_files(root)
    shipped = set(tracked) - set(ignored)
    out = [f"the archive would ship {folder} ({sum(f.startswith(folder) for f in shipped)} files): add it to "
           f".comfyignore" for folder in NOT_SHIPPED if any(f.startswith(folder) for f in shipped)]
    out += [f".comfyignore leaves out {path}, which users need" for path in SHIPPED_FILES
            if path in tracked and path not in shipped]
    out += [f".comfyignore leaves out {path}, which users need" for path in ignored if path.startswith(SHIPPED_FOLDERS)]
    return out


def gaps(root: Path = ROOT) -> list[str]:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    changelog = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    return (metadata_gaps(pyproject, root) + changelog_gaps(str(pyproject.get("project", {}).get("version")), changelog)
            + archive_gaps(root))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="the repository (default: this checkout)")
    found = gaps(parser.parse_args(argv).root)
    for gap in found:
        print(f"check_publish: {gap}")
    print("check_publish: not ready to publish (CONTRIBUTING.md, 'Publishing')" if found else
          "check_publish: ready to publish")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
