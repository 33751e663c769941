"""The docs follow the code: a page per engine and per command, links that resolve, module
paths that exist, a README that stays a landing page, and an HTTP page that is generated.

Docs rot silently: a renamed module, a moved test file or a new engine leaves the text
behind and nothing fails. These checks make that drift a test failure instead. They read
files and the registries only (no engine is loaded, no torch is imported), except the HTTP
page, which is compared with what the server's own generator writes now.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from diffcompose.cli.main import build_parser
from diffcompose.methods import ENGINE_PACKAGES, all_engines
from diffcompose.server.reference import markdown_html, slug

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SRC = REPO / "src"
README = REPO / "README.md"
README_MAX_LINES = 300

#: Names the docs may use although they do not exist on this branch: they are written the way
#: the issue-20 design says, and another branch adds them. Empty once everything is merged.
EXPECTED_AFTER_MERGE: frozenset[str] = frozenset()

#: Sub-packages of ``src/diffcompose``: a backticked path starting with one of them (``models/sampling.py``)
#: names a file of this project.
PACKAGE_DIRS = ("attention", "batch", "cli", "evaluation", "inputs", "methods", "models", "regions", "server",
                "training")

#: Folders of the repository whose files the docs name (`tests/methods/sam/test_sam.py`, `benchmarks/quality.py`).
REPO_DIRS = ("src", "tests", "benchmarks", "scripts", "docs", ".ci")

#: Placeholders in example paths (``src/diffcompose/methods/<engine>/train.example.yaml``, the example engine ``myengine``).
PLACEHOLDER = re.compile(r"[<>*{}]|myengine|NNN")


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def without_code(text: str) -> str:
    """The text outside fenced code blocks (links and headings only count there)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def headings(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them (``-1`` for repeats)."""
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6} (.+)$", without_code(path.read_text(encoding="utf-8")), flags=re.M):
        base = slug(m.group(1).replace("`", ""))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Targets of the Markdown links and images of ``path`` (outside code)."""
    text = re.sub(r"`[^`\n]*`", "", without_code(path.read_text(encoding="utf-8")))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)


def package_engines() -> list:
    """The engines the packages of ENGINE_PACKAGES register (not the test engines other tests add for a while)."""
    prefixes = tuple(f"diffcompose.methods.{package}." for package in ENGINE_PACKAGES)
    return [info for info in all_engines() if info.target.startswith(prefixes)]


def test_every_registered_engine_has_its_page_and_the_index_links_it() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    names = [info.name for info in package_engines()]
    assert names, "no engine registered"
    missing = [n for n in names if not (DOCS / "engines" / f"{n}.md").is_file()]
    assert not missing, f"engines without docs/engines/<name>.md: {missing}"
    unlinked = [n for n in names if f"(engines/{n}.md)" not in index]
    assert not unlinked, f"engines missing from docs/index.md: {unlinked}"
    pages = {p.stem for p in (DOCS / "engines").glob("*.md")}
    assert pages <= set(names), f"pages of engines that are not registered: {sorted(pages - set(names))}"


def test_engine_pages_state_the_registered_tasks_and_priority() -> None:
    """The two facts every engine page states about its registration; a changed registration fails here."""
    wrong = []
    for info in package_engines():
        page = (DOCS / "engines" / f"{info.name}.md").read_text(encoding="utf-8")
        wrong += [f"{info.name}: task `{t}` not named" for t in info.tasks if f"`{t}`" not in page]
        if not re.search(rf"priority {info.priority}\b", page, flags=re.I):
            wrong.append(f"{info.name}: 'priority {info.priority}' not stated")
    assert not wrong, "; ".join(wrong)


def cli_commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_every_cli_command_has_its_section() -> None:
    commands = cli_commands()
    assert {"remove", "serve", "batch"} <= set(commands)
    sections = headings(DOCS / "cli.md")
    missing = [c for c in commands if c not in sections]
    assert not missing, f"commands without a '## <command>' section in docs/cli.md: {missing}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve_to_files_and_headings(path: Path) -> None:
    broken = []
    for target in links(path):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in headings(dest):
            broken.append(f"{target} (no heading '#{anchor}' in {dest.relative_to(REPO)})")
    assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_is_a_landing_page_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    # The commands a newcomer runs; .ci/run runs the second one exactly.
    assert "scripts/setup && .venv/bin/diffcompose demo" in text
    assert "scripts/setup && .venv/bin/python -m pytest" in text
    assert "scripts/setup && .venv/bin/python -m pytest" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def _defines(module: Path, name: str) -> bool:
    """Whether ``module`` (a file) defines or imports ``name`` at any level (read, not imported)."""
    text = module.read_text(encoding="utf-8")
    return re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b|^\s*{name}\s*[:=]|\bimport\b[^\n]*\b{name}\b",
                     text, flags=re.M) is not None


def dotted_name_exists(dotted: str) -> bool:
    """``diffcompose.a.b.name`` resolves to a module file, a package, or a name defined in one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = SRC.joinpath(*parts[:i])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[i:]
            if not rest:
                return True
            if len(rest) > 2 or not _defines(module, rest[0]):
                return False
            if len(rest) == 1:
                return True
            # a method of a class defined there or re-exported from its own module (Engine.execute)
            homes = [f for f in SRC.rglob("*.py")
                     if re.search(rf"^class {rest[0]}\b", f.read_text(encoding="utf-8"), flags=re.M)]
            return any(_defines(f, rest[1]) for f in homes)
    return False


def named_paths(text: str) -> tuple[set[str], set[str]]:
    """Repository paths and dotted module names the text names in backticks (placeholders skipped)."""
    paths, modules = set(), set()
    for span in re.findall(r"`([^`\n]+)`", text):
        for word in span.split():
            # the name before any call, "module:function" colon or punctuation: `diffcompose.x.fit(a, b)`
            token = re.match(r"[\w./<>*{}-]*", word.lstrip("([\"'")).group().rstrip(".")
            if PLACEHOLDER.search(token):
                continue
            if re.fullmatch(r"diffcompose(\.\w+)+", token):
                modules.add(token)
            elif token.split("/", 1)[0] in REPO_DIRS and "/" in token:
                paths.add(token)
            elif token.split("/", 1)[0] in PACKAGE_DIRS and "/" in token:
                paths.add("src/diffcompose/" + token)
    return paths, modules


def test_docs_name_only_files_and_modules_that_exist() -> None:
    missing = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        paths, modules = named_paths(text)
        # paths in commands too: benchmark scripts and test files run in code blocks
        paths |= set(re.findall(r"\b(?:benchmarks|tests)/[\w/]+\.py\b", text))
        for p in sorted(paths):
            if p not in EXPECTED_AFTER_MERGE and not (REPO / p).exists():
                missing.append(f"{path.relative_to(REPO)}: {p}")
        for m in sorted(modules):
            if m not in EXPECTED_AFTER_MERGE and not dotted_name_exists(m):
                missing.append(f"{path.relative_to(REPO)}: {m}")
    assert not missing, "the docs name what does not exist:\n" + "\n".join(missing)


def test_docstrings_cross_reference_only_what_exists() -> None:
    """Sphinx-style references in the source (``:mod:`diffcompose.regions.crop```) name real modules and names."""
    stale = []
    for path in sorted((SRC / "diffcompose").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r":(?:mod|func|class|meth|data|attr|exc):`~?(diffcompose(?:\.\w+)+)`", text):
            if name not in EXPECTED_AFTER_MERGE and not dotted_name_exists(name):
                stale.append(f"{path.relative_to(REPO)}: {name}")
    assert not stale, "docstrings name what does not exist:\n" + "\n".join(stale)


def test_the_path_check_catches_what_it_must() -> None:
    """The checks above would pass on nothing if their parsers found nothing: make them fail on purpose."""
    paths, modules = named_paths("see `src/diffcompose/methods/nothere.py`, `diffcompose.nothere.fit`, "
                                 "`models/sampling.py` and `src/diffcompose/methods/<engine>/train.example.yaml`")
    assert paths == {"src/diffcompose/methods/nothere.py", "src/diffcompose/models/sampling.py"}
    assert modules == {"diffcompose.nothere.fit"}
    assert not dotted_name_exists("diffcompose.nothere.fit")
    assert not dotted_name_exists("diffcompose.training.loop.no_such_function")
    assert dotted_name_exists("diffcompose.training.loop.fit")
    assert dotted_name_exists("diffcompose.methods.engine.Engine.execute")
    assert not dotted_name_exists("diffcompose.methods.engine.Engine.no_such_method")
    assert dotted_name_exists("diffcompose.CancelToken.cancel")  # re-exported, defined in diffcompose.progress
    assert not dotted_name_exists("diffcompose.regions.runner")  # the stale pointer crop.py had
    assert "a-200-item-classical-batch" in headings(DOCS / "benchmarks.md")
    assert links(README) and all(not t.startswith("`") for t in links(README))


def test_http_api_page_is_what_the_generator_writes_now() -> None:
    """docs/http-api.md is generated from the guide the server's /docs shows and its OpenAPI document,
    so it cannot become a second, drifting copy. Regenerate it with
    ``python -m diffcompose.server.http_docs --markdown -o docs/http-api.md``."""
    pytest.importorskip("fastapi")
    from diffcompose.server.http_docs import openapi_document
    from diffcompose.server.reference import render_markdown

    committed = (DOCS / "http-api.md").read_text(encoding="utf-8")
    assert committed == render_markdown(openapi_document()), (
        "docs/http-api.md is stale: run python -m diffcompose.server.http_docs --markdown -o docs/http-api.md")


def test_the_generator_command_writes_the_page(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from diffcompose.server.http_docs import main

    out = tmp_path / "http-api.md"
    assert main(["--markdown", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (DOCS / "http-api.md").read_text(encoding="utf-8")


def test_the_docs_page_of_the_server_shows_the_guide() -> None:
    from diffcompose.server.reference import guide_text, render_reference

    doc = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}, "components": {"schemas": {}}}
    page = render_reference(doc, swagger_href="/docs/swagger", openapi_href="/openapi.json")
    assert markdown_html(guide_text()) in page
    for title in re.findall(r"^## (.+)$", guide_text(), flags=re.M):
        assert f'id="{slug(title)}"' in page, title
    assert "http://" not in guide_text() and "https://" not in guide_text()  # /docs links nowhere else


def test_markdown_subset_renders_blocks_and_escapes_text() -> None:
    html = markdown_html("## A `b` & c\n\npara **bold** <i>x</i>\nnext line\n\n- one\n  more\n- two\n\n"
                         "| h1 | h2 |\n|---|---|\n| `a\\|b` | c |\n\n```bash\necho <x>\n```\n")
    assert '<h2 id="a-b--c">A <code>b</code> &amp; c</h2>' in html
    assert "<p>para <strong>bold</strong> &lt;i&gt;x&lt;/i&gt; next line</p>" in html
    assert "<ul><li>one more</li><li>two</li></ul>" in html
    assert "<table><tr><th>h1</th><th>h2</th></tr><tr><td><code>a|b</code></td><td>c</td></tr></table>" in html
    assert "<pre><code>echo &lt;x&gt;</code></pre>" in html
    assert "<i>" not in html
