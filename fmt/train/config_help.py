"""The `--config.NAME=DEFAULT  help` lines that `finetune.py --help` prints.

The help of a field is the comment that `fmt/train/config.py` writes beside it,
read from that file's source, so that the comments stay the one place where
fields are documented.
"""

import ast
import io
import pathlib
import textwrap
import tokenize

CONFIG_SOURCE = pathlib.Path(__file__).with_name("config.py")
_WIDTH = 100  # help lines wrap here
_HELP_COLUMN = 44  # where help starts when the flag part is shorter than this


def field_comments(source: str | None = None) -> dict[str, str]:
    """Field name -> its comment, in the order `default_config` sets them.

    A field's comment is the one that trails its `c.NAME = VALUE` line, with
    the comment-only lines below it that are indented past the statement (its
    continuation). A field without a trailing comment takes the comment lines
    just above it (`# Model: ...` before `c.model`).
    """
    if source is None:
        source = CONFIG_SOURCE.read_text(encoding="utf-8")
    comments = {}  # line -> (column, text)
    code_lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = (token.start[1], token.string.lstrip("#").strip())
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    helps = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)):
            continue
        helps[target.attr] = _comment_of(node, comments, code_lines)
    return helps


def _comment_of(node: ast.Assign, comments: dict, code_lines: set) -> str:
    parts = []
    last = node.end_lineno
    if last in comments:
        parts.append(comments[last][1])
        line = last + 1
        # Continuation: comment-only lines indented past the statement; a comment
        # at the statement's own indentation heads the next group of fields.
        while line in comments and line not in code_lines \
                and comments[line][0] > node.col_offset:
            parts.append(comments[line][1])
            line += 1
    else:
        line = node.lineno - 1
        while line in comments and line not in code_lines \
                and comments[line][0] == node.col_offset:
            parts.insert(0, comments[line][1])
            line -= 1
    return " ".join(part for part in parts if part)


def format_value(value) -> str:
    """A value as it would be written after `--config.NAME=` on a shell line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        # The comma form that finetune.py accepts; () has no comma form.
        return ",".join(format_value(v) for v in value) if value else "()"
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in "'\"" for c in value) \
            else repr(value)
    return repr(value)


def help_lines(config, comments: dict[str, str] | None = None) -> list[str]:
    """One `--config.NAME=DEFAULT  help` entry per field of `config`: fields of
    `default_config` in its order, then any that an experiment config adds."""
    if comments is None:
        comments = field_comments()
    names = [name for name in comments if name in config]
    names += sorted(name for name in config.keys() if name not in comments)
    lines = []
    for name in names:
        flag = f"  --config.{name}={format_value(config[name])}"
        text = comments.get(name, "")
        if not text:
            lines.append(flag)
            continue
        column = max(_HELP_COLUMN, len(flag) + 2)
        wrapped = textwrap.wrap(text, max(_WIDTH - column, 40))
        lines.append(flag.ljust(column) + wrapped[0])
        lines.extend(" " * column + rest for rest in wrapped[1:])
    return lines
