"""The size of each implementation's code ("development effort", a row of the article's
table), measured when a sweep starts and stored in its meta.json: a report of an old run
then shows the code that run measured, not today's checkout."""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path


def _docstring_spans(tree) -> list[tuple]:
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                spans.append(((first.lineno, first.col_offset),
                              (first.end_lineno, first.end_col_offset)))
    return spans


def count_code_lines(path) -> int:
    """Lines holding code: blank lines, comment-only lines and docstrings excluded, found
    with the tokenizer and the syntax tree (a '#' in a string or a docstring-like string
    assigned to a name still counts as code)."""
    source = Path(path).read_text(encoding="utf-8")
    spans = _docstring_spans(ast.parse(source))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        if tok.type == tokenize.STRING and any(s <= tok.start and tok.end <= e for s, e in spans):
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines)


def source_lines(entry, folder: Path) -> dict[str, int | None]:
    """file -> code lines (None: the file is missing) for a registry entry's `sources`."""
    return {f: count_code_lines(folder / f) if (folder / f).exists() else None
            for f in entry.sources}


def implementations_meta() -> dict[str, dict]:
    """Every registered implementation, in registry order: what it is, the pip extra it
    needs and its code lines per source file. What a report needs about the code, so it
    never has to import impls."""
    import impls

    folder = Path(impls.__file__).parent
    return {name: {"description": impls.entry(name).description, "extra": impls.entry(name).extra,
                   "code_lines": source_lines(impls.entry(name), folder)}
            for name in impls.names()}
