"""MkDocs hook: the reference pages that are generated from the code each time the site is built.

Two pages are added to the site as virtual files (nothing is written into ``docs/``):

- ``reference/cli.md``: every command and sub-command of the ``predrnn`` command line, read from the
  click objects of the typer app (``typer.main.get_command(predrnn.cli:app)``): its usage line, its help
  text and, per argument and option, what ``--help`` prints (flags, value type, help, default).
- ``reference/config.md``: every configuration key ``section.field`` of
  :class:`predrnn.config.ExperimentConfig`, read from its frozen dataclasses: type, default, the section's
  docstring and the comment written beside the field; and the presets of ``predrnn.config.PRESETS``
  with the keys each changes from the defaults.

So a command, option or key added, renamed or removed in the code shows on the next ``mkdocs build``;
the pages cannot drift from the code. Registered under ``hooks:`` in ``mkdocs.yml``.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import json
import re
import types
import typing
from typing import Any, Literal

from mkdocs.structure.files import File, Files

CLI_PAGE = "reference/cli.md"
CONFIG_PAGE = "reference/config.md"


# ---------------------------------------------------------------------------------------------
# Text helpers: help texts and docstrings use backticks for code, everything else is escaped.

_CODE = re.compile(r"(?::[\w:]+:)?(``?)~?(.+?)\1")  # `x`, ``x`` and Sphinx roles :class:`~x`


def _inline_html(text: str) -> str:
    """``text`` as HTML: code spans (single or double backticks, Sphinx roles) become <code>, the rest is
    escaped."""
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append(f"<code>{html.escape(m.group(2))}</code>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _paragraphs(text: str | None) -> str:
    """A help text or docstring (paragraphs separated by blank lines, lines hard-wrapped) as HTML."""
    if not text:
        return ""
    text = inspect.cleandoc(text)
    paras = [" ".join(line.strip() for line in block.splitlines() if line.strip() != "\b")
             for block in re.split(r"\n\s*\n", text)]
    return "\n".join(f"<p>{_inline_html(p)}</p>" for p in paras if p)


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table (cells already HTML), set off by blank lines so Markdown passes it through."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"\n<table>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"


# ---------------------------------------------------------------------------------------------
# The command line


def _commands(group: Any, parent: Any) -> list[tuple[list[str], Any, Any]]:
    """``(path, command, context)`` for every command below ``group``, in the app's order, depth first."""
    out = []
    for name in group.list_commands(parent):
        cmd = group.get_command(parent, name)
        if cmd is None or getattr(cmd, "hidden", False):
            continue
        ctx = cmd.context_class(cmd, info_name=name, parent=parent)
        out.append(([*parent.command_path.split(), name], cmd, ctx))
        if hasattr(cmd, "list_commands"):
            out.extend(_commands(cmd, ctx))
    return out


def command_paths(app: Any) -> list[str]:
    """Every command of the typer ``app`` as typed, e.g. ``predrnn data show`` (used by the tests too)."""
    import typer

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="predrnn")
    return [" ".join(path) for path, _, _ in _commands(root, ctx)]


def _params_table(cmd: Any, ctx: Any) -> str:
    rows = []
    for param in cmd.get_params(ctx):
        if param.name == "help":
            continue
        record = param.get_help_record(ctx)
        if record is None:  # a plain click argument: no help record
            record = (param.human_readable_name, "")
        flags, help_text = record
        kind = "argument" if param.param_type_name == "argument" else "option"
        rows.append([f"<code>{html.escape(flags)}</code>", kind, _inline_html(help_text)])
    if not rows:
        return "<p>No options.</p>\n"
    return _table(["argument / option", "", "what it does"], rows)


def cli_markdown() -> str:
    """The CLI reference page: an index of the commands, then one section per command."""
    import typer

    from predrnn.cli import app

    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="predrnn")
    commands = _commands(root, root_ctx)
    lines = [
        "# Command line reference",
        "",
        "Generated from the `predrnn` command line (`predrnn.cli:app`, a typer app) when this site is built, "
        "so it lists exactly what `predrnn COMMAND --help` prints. Every command that fails on bad input "
        "prints one line `error: <message>` and exits with code 2. Options are what `--help` shows: the flag, "
        "the value it takes, what it does and its default.",
        "",
        "The main job is not a `predrnn` command: `make run` runs `python -m flows.run [--clips N] "
        "[--iterations K] [--workers W] [--tracking-uri URI]` "
        "(see [the moving-digits tutorial](../tutorials/moving-digits.md)).",
        "",
        _paragraphs(root.help),
        "",
        "## Commands",
        "",
    ]
    index = [[f'<a href="#{"-".join(path)}"><code>{html.escape(" ".join(path))}</code></a>',
              _inline_html(cmd.get_short_help_str(limit=120))] for path, cmd, _ in commands]
    lines.append(_table(["command", "summary"], index))
    for path, cmd, ctx in commands:
        level = "#" * (len(path))  # predrnn train -> ##, predrnn data show -> ###
        lines += ["", f"{level} {' '.join(path)}", ""]
        lines += ["```text", cmd.get_usage(ctx), "```", ""]
        lines.append(_paragraphs(cmd.help))
        if hasattr(cmd, "list_commands"):
            subs = ", ".join(f"`{' '.join([*path, n])}`" for n in cmd.list_commands(ctx))
            lines += ["", f"Sub-commands: {subs}.", ""]
        else:
            lines.append(_params_table(cmd, ctx))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The configuration


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (list, tuple):
        inner = [_type_name(a) for a in args if a is not Ellipsis]
        return f"list[{', '.join(inner)}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _json(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return json.dumps(value, default=list)


def _field_comments(cls: type) -> dict[str, str]:
    """The comment written beside each field in the class body (``grad_clip: float = 0.0  # 0 disables``)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found = {}
    for line in source.splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m:
            found[m.group(1)] = m.group(2).strip()
    return found


def config_sections(cfg_cls: type) -> dict[str, type]:
    """``{section: dataclass}`` of ``ExperimentConfig``, in declaration order."""
    hints = typing.get_type_hints(cfg_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cfg_cls)
            if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])}


def _fields_table(cls: type, prefix: str) -> str:
    hints = typing.get_type_hints(cls)
    notes = _field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        default = _default(f)
        rows.append([f"<code>{html.escape(prefix + f.name)}</code>",
                     f"<code>{html.escape(_type_name(hints[f.name]))}</code>",
                     "" if default is dataclasses.MISSING else f"<code>{html.escape(_json(default))}</code>",
                     _inline_html(notes.get(f.name, ""))])
    return _table(["key", "type", "default (JSON)", "note"], rows)


def config_markdown() -> str:
    """The configuration reference page: how keys are set, the presets, then one table per section."""
    from predrnn import config

    cfg_cls = config.ExperimentConfig
    sections = config_sections(cfg_cls)
    defaults = cfg_cls().flat()
    lines = [
        "# Configuration keys",
        "",
        "Generated from the frozen dataclasses in `predrnn/config.py` when this site is built: every key "
        "`section.field` of `ExperimentConfig`, its type, its default and the note written beside it in the "
        "code. A config is validated when it is built: a wrong type, an unknown key (the section's keys are "
        "listed) or a contradiction (`r_sampling_step_1 >= r_sampling_step_2`, frames not divisible by the "
        "patch, ...) is refused with a message that names the key.",
        "",
        "Keys are set with `--set section.field=value` (the value is JSON, else a bare string; sequences are "
        "lists: `--set model.num_hidden=[64,64,64,64] --set sampling.rss_curve=sigmoid`), or all at once "
        "with `--config FILE.json` (the `to_dict()` form, as `predrnn tune` writes its best config). "
        "Where a run is tracked, stored and executed is not part of the experiment: it is resolved by the "
        "command into a run spec, so a saved model directory carries no machine's URI.",
        "",
        "## Presets",
        "",
        "`--preset NAME` (default `quick`); the keys each preset sets differently from the defaults below:",
    ]
    rows = []
    for name, make in config.PRESETS.items():
        flat = make().flat()
        changed = [f"<code>{html.escape(k)}={html.escape(_json(v))}</code>"
                   for k, v in flat.items() if k != "name" and v != defaults.get(k)]
        rows.append([f"<code>{html.escape(name)}</code>", _inline_html(inspect.getdoc(make) or ""),
                     ", ".join(changed) or "(the defaults)"])
    lines.append(_table(["preset", "what", "keys changed from the defaults"], rows))
    top = [f for f in dataclasses.fields(cfg_cls) if f.name not in sections]
    for f in top:
        lines += ["", f"## {f.name}", "",
                  f"`{f.name}`: `{_type_name(typing.get_type_hints(cfg_cls)[f.name])}`, "
                  f"default `{_json(_default(f))}`; the run's name."]
    for section, cls in sections.items():
        lines += ["", f"## {section}", "", _paragraphs(inspect.getdoc(cls)), _fields_table(cls, f"{section}.")]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # a sequence of dataclasses, e.g. values.channels
            inner = [a for a in typing.get_args(hints[f.name]) if isinstance(a, type) and dataclasses.is_dataclass(a)]
            for sub in inner:
                lines += ["", f"### {section}.{f.name}[]", "",
                          f"Each entry of `{section}.{f.name}` is a `{sub.__name__}`:", "",
                          _paragraphs(inspect.getdoc(sub)), _fields_table(sub, "")]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# MkDocs events


def on_files(files: Files, config: Any) -> Files:
    """Add the generated reference pages to the site's files (before the navigation is built)."""
    for path, make in ((CLI_PAGE, cli_markdown), (CONFIG_PAGE, config_markdown)):
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=make()))
    return files
