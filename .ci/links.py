#!/usr/bin/env python3
"""Check the relative links of the project's markdown.

Reads README.md, docs/*.md, BENCHMARKS.md and every */README.md. Each
relative link, `[text](target)` or `![alt](target)` (and a reference
definition, `[name]: target`), must name a file or directory of the
repository; a `#anchor`, alone or after a markdown file, must be the
GitHub slug of a heading in that file (lowercased, punctuation other than
`-` and spaces dropped, spaces turned into `-`, `-1`, `-2` ... on
repeats). Links with a scheme (http:, https:, mailto:) are not checked,
nor anything inside fenced code blocks or inline code.

Prints `FILE:LINE: broken link TARGET` for each broken link and exits 1;
exits 0 when all resolve. Python 3 standard library only.
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^ *(`{3,}|~{3,})")
# An inline code span, not crossing a blank line.
CODE_SPAN = re.compile(r"(`+)((?:[^`\n]|\n(?![ \t]*\n)|`(?!\1))+?)\1(?!`)")
# [text](target "title") and ![alt](target); the text may hold one level of
# brackets and span lines; the target may be <...> or hold balanced parens.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"
    r"\(\s*(<[^>\n]*>|(?:[^()\s]|\([^()\s]*\))*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
)
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(<[^>\n]*>|\S+)", re.M)
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files():
    """The files to check, in a stable order."""
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files.append(ROOT / "BENCHMARKS.md")
    for readme in sorted(ROOT.glob("*/README.md")):
        top = readme.parent.name
        if top.startswith(".") or top == "target":
            continue  # hidden directories and build output
        files.append(readme)
    seen, out = set(), []
    for f in files:
        if f.is_file() and f not in seen:
            seen.add(f)
            out.append(f)
    return out


def blank_fences(text):
    """The text with every line of a fenced code block emptied, line count kept."""
    lines = text.split("\n")
    fence = None  # (char, length) of the open fence
    for i, line in enumerate(lines):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = (m.group(1)[0], len(m.group(1)))
                lines[i] = ""
        else:
            close = m and m.group(1)[0] == fence[0] and len(m.group(1)) >= fence[1]
            if close and line.strip() == m.group(1):
                fence = None
            lines[i] = ""
    return "\n".join(lines)


def blank_code_spans(text):
    """Inline code replaced by spaces (its newlines kept, so offsets hold)."""
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    """Every anchor a markdown file defines: heading slugs and HTML anchors."""
    if path in _anchors:
        return _anchors[path]
    text = blank_fences(path.read_text(encoding="utf-8"))
    found, counts = set(), {}
    prev = ""
    for line in text.split("\n"):
        title = None
        m = ATX.match(line)
        if m:
            title = m.group(2) or ""
        elif SETEXT.match(line) and prev.strip() and not ATX.match(prev) \
                and not prev.lstrip().startswith(("-", "*", "+", "|", ">")):
            title = prev.strip()
        if title is not None:
            base = slug(title)
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        prev = line
    found.update(HTML_ANCHOR.findall(text))
    _anchors[path] = found
    return found


def targets(text):
    """(line, target) of every link outside code, in order."""
    text = blank_code_spans(blank_fences(text))  # the lines stay where they were
    found = [(m.start(), m.group(1)) for m in INLINE_LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REF_DEF.finditer(text)]
    for offset, target in sorted(found):
        yield text.count("\n", 0, offset) + 1, target


def broken(source, target):
    """Why `target`, linked from `source`, does not resolve; None if it does."""
    if target.startswith("<") and target.endswith(">"):
        target = target[1:-1]
    if not target or SCHEME.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.partition("?")[0])
    if not path_part:
        dest = source
    elif path_part.startswith("/"):
        dest = ROOT / path_part.lstrip("/")
    else:
        dest = source.parent / path_part
    dest = dest.resolve()
    if ROOT != dest and ROOT not in dest.parents:
        return "outside the repository"
    if not dest.exists():
        return "no such file"
    if anchor and dest.is_file() and dest.suffix.lower() in (".md", ".markdown"):
        if unquote(anchor) not in anchors(dest):
            return "no such heading"
    return None


def main():
    problems = 0
    checked = 0
    files = markdown_files()
    for source in files:
        text = source.read_text(encoding="utf-8")
        for line, target in targets(text):
            checked += 1
            if broken(source, target):
                print(f"{source.relative_to(ROOT)}:{line}: broken link {target}")
                problems += 1
    if problems:
        return 1
    print(f"links: {checked} links in {len(files)} files resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
