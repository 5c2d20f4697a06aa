"""The repository documents itself: no reference to design notes outside it, no broken relative link
in the Markdown docs, a section in docs/models.md for every registered model, and every hook of
wxbench.hookspecs documented in docs/writing-a-plugin.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# the two design notes that live outside the repository; spelled in pieces so this file does not
# mention them itself
EXTERNAL_NOTES = ("MODELS" + ".md", "PROTOCOL" + ".md")
# [text](target) with a relative target: no scheme, no pure #anchor
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def markdown_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(ROOT.glob("plugins/*/README.md"))]


def test_no_reference_to_design_notes_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (npz, png)
            continue
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if any(note in line for note in EXTERNAL_NOTES):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "point these into docs/ instead:\n" + "\n".join(offenders)


def without_code_blocks(markdown: str) -> str:
    return re.sub(r"```.*?```", "", markdown, flags=re.S)


def anchors(markdown_file: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", without_code_blocks(markdown_file.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_markdown_links_resolve():
    broken = []
    for doc in markdown_docs():
        if not doc.exists():
            continue
        for target in LINK.findall(without_code_blocks(doc.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # http(s):, mailto:
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path) if path else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _normalised(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def bundled_distributions() -> set[str]:
    """The core and the plugins under plugins/: the zoo docs/models.md documents (a third-party
    plugin installed beside them, e.g. the example plugin, documents itself)."""
    import tomllib

    names = {"wxbench"}
    for pyproject in ROOT.glob("plugins/*/pyproject.toml"):
        names.add(tomllib.loads(pyproject.read_text())["project"]["name"])
    return {_normalised(n) for n in names}


def test_every_registered_model_has_a_section_in_models_md():
    from wxbench.plugins import get_registry

    registry = get_registry()
    bundled = bundled_distributions()
    names = {reg.name for reg in [*registry.forecasters.values(), *registry.encoders.values()]
             if reg.distribution and _normalised(reg.distribution) in bundled}
    assert names, "no model of the bundled plugins is registered"
    headings = set(re.findall(r"^### (\S+)\s*$", (DOCS / "models.md").read_text(), flags=re.M))
    missing = sorted(names - headings)
    assert not missing, f"docs/models.md has no '### name' section for: {', '.join(missing)}"


def test_models_md_has_the_fixed_sections():
    sections = re.findall(r"^## (.+?)\s*$", (DOCS / "models.md").read_text(), flags=re.M)
    for section in ("Baselines", "Sequence models", "Spatial models", "Spherical models", "WeatherDiff models"):
        assert section in sections, f"docs/models.md lacks the section '## {section}'"


def test_every_hookspec_is_documented():
    import wxbench.hookspecs as hookspecs

    text = (DOCS / "writing-a-plugin.md").read_text()
    specs = [name for name, obj in vars(hookspecs).items()
             if callable(obj) and hasattr(obj, "wxbench_spec")]
    assert specs, "no hook specifications found in wxbench.hookspecs"
    undocumented = [name for name in specs if f"`{name}" not in text]
    assert not undocumented, f"docs/writing-a-plugin.md does not document: {', '.join(undocumented)}"
