"""absl flag parsing for scripts that take a run config (`--config=FILE.py[:ARG]`).

What absl and ml_collections leave to their caller: `--help` that lists the
config's fields and exits 0, one `error: ...` line (exit 2) for a bad config
path or override instead of a traceback, and the comma form
`--config.text_fields=title,body` for every tuple-valued field.
"""

import ast
import difflib
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path, tuple_parser
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from fmt.train import config_help

_HELP = ("--help", "-help", "--helpshort", "-helpshort", "-?", "-h")
_HELP_FULL = ("--helpfull", "-helpfull")
_EXAMPLE = "--config=experiments/configs/glue.py:sst2"
# absl's parser per kind of value -> (what is wrong, what to pass instead).
_KINDS = {
    flags.IntegerParser: ("is not an integer", "a whole number"),
    flags.FloatParser: ("is not a number", "a number"),
    flags.BooleanParser: ("is not true or false", "true or false"),
}


class FlagError(Exception):
    """A bad flag, said in one line."""


class CommaTupleParser(tuple_parser.TupleParser):
    """Tuples from `a,b` as well as from Python literals such as `('a', 'b')`.

    ml_collections' own parser takes `title,body` for the one string
    'title,body'. Elements keep the type the text reads as here; `_coerce`
    then gives them the type of the field's default elements.
    """

    def parse(self, argument):
        if not isinstance(argument, str):
            return super().parse(argument)
        text = argument.strip()
        if not text:
            return ()
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):  # bare words: title,body
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def quiet_logging() -> None:
    """fmt's INFO lines as plain messages; the libraries' chatter only at WARNING.

    fmt uses transformers for tokenizers only: its advice (e.g. that PyTorch is
    missing, as in the demo's environment) is not for fmt's scripts. Its logger
    takes the level from TRANSFORMERS_VERBOSITY when transformers is first
    imported, so this runs before that.
    """
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for noisy in ("absl", "jax", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # gcsfs warns at every file system it opens that it cannot tell the bucket's
    # type without Google's credential library, then goes on as it should.
    logging.getLogger("gcsfs").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def parse_flags(argv: list[str], name: str = "config", default_config=None) -> list[str]:
    """absl's `FLAGS(argv)` for a script with a config flag called `name`.

    `--help` prints the script's flags and the config's fields (the file given
    with --config, else `default_config()`) and exits 0; mistakes print one
    `error:` line and exit 2 (`--verbose` raises them instead).
    """
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    try:
        spec = _flag_value(args, name)
        if spec is not None:
            check_config_path(spec, name)
        if any(arg in _HELP or arg in _HELP_FULL for arg in args):
            print_help(spec, name, default_config, full=any(a in _HELP_FULL for a in args))
            sys.exit(0)
        config_flags.register_flag_parser_for_type(tuple, CommaTupleParser())
        try:
            remaining = flags.FLAGS(argv)
        except flags.UnrecognizedFlagError as error:
            raise FlagError(_unknown_flag(error.flagname)) from error
        except flags.IllegalFlagValueError as error:
            raise FlagError(_bad_value(str(error), name)) from error
        except (AttributeError, KeyError) as error:  # ml_collections: an unknown key
            raise FlagError(_unknown_key(args, spec, name) or _one_line(error)) from error
        except (flags.Error, TypeError, ValueError) as error:
            raise FlagError(_one_line(error)) from error
        _coerce(name)
        return remaining
    except FlagError as error:
        if "--verbose" in args:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def check_config_path(spec: str, name: str = "config") -> None:
    """Fail on a config path that is not an existing .py file (ml_collections
    would defer it to a 50-line traceback at the first use of the config)."""
    path = spec.split(":", 1)[0]
    if not path.endswith(".py"):
        hint = (f"did you mean --{name}={path}.py?" if os.path.isfile(path + ".py")
                else f"pass a Python config file, e.g. {_EXAMPLE}")
        raise FlagError(f"--{name}={spec} is not a .py file; {hint}")
    if not os.path.isfile(path):
        raise FlagError(f"--{name}={spec}: no such file {path} (from {os.getcwd()}); "
                        f"pass a config file, e.g. {_EXAMPLE}")


def load_config(spec: str, name: str = "config"):
    """The ConfigDict that `--{name}=spec` names, unlocked."""
    check_config_path(spec, name)
    return ConfigFileFlagParser(name, lock_config=False).parse(spec)


def config_module(path: str):
    """A config file as a Python module, for what it defines beside get_config (a
    protocol's SWEEP, SEEDS, TASKS and PUBLISHED numbers)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0],
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def print_help(spec: str | None, name: str, default_config, full: bool = False) -> None:
    """The usage text and flags (as absl prints them), then the config's fields."""
    app.usage(shorthelp=not full, writeto_stdout=True)
    if spec is not None:
        config, source = load_config(spec, name), f"--{name}={spec}"
    else:
        if default_config is None:
            from fmt.train.config import default_config
        config, source = default_config(), f"fmt/train/config.py (add --{name}=FILE for a file's)"
    print(f"\nfields of --{name}, with the defaults of {source}:\n"
          f"  (override any with --{name}.NAME=VALUE; a tuple field also takes a,b)")
    print("\n".join(config_help.help_lines(config)))


def _flag_value(args: list[str], name: str) -> str | None:
    """The last value given to --name (as --name=V or --name V)."""
    value = None
    for index, arg in enumerate(args):
        match = re.fullmatch(rf"--?{name}(?:=(.*))?", arg, re.S)
        if match:
            value = match.group(1) if match.group(1) is not None else (
                args[index + 1] if index + 1 < len(args) else None)
    return value


def _unknown_flag(flag_name: str) -> str:
    known = [n for n in flags.FLAGS if "." not in n]
    close = difflib.get_close_matches(flag_name, known, n=1)
    hint = f"did you mean --{close[0]}?" if close else "see --help for the flags"
    return f"unknown flag --{flag_name}; {hint}"


def _unknown_key(args: list[str], spec: str | None, name: str) -> str | None:
    """The first --name.KEY override whose KEY the config lacks, said with the
    nearest key; None if every key is known (the error was something else)."""
    if spec is None:
        return None
    config = load_config(spec, name)
    for arg in args:
        match = re.match(rf"--?(?:no)?{name}\.([^=]+)", arg)
        if not match:
            continue
        node, path = config, []
        for part in match.group(1).split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                key = ".".join([*path, part])
                close = difflib.get_close_matches(part, keys, n=1)
                hint = (f"did you mean --{name}.{'.'.join([*path, close[0]])}?" if close
                        else f"see the keys with --{name}={spec} --help")
                return f"--{name} has no key {key}; {hint}"
            node, path = node[part], [*path, part]
    return None


def _bad_value(message: str, name: str) -> str:
    """absl's "flag --X=V: reason" as one sentence that says what to pass."""
    match = re.match(r"flag --([^=\s]+)=(.*?): (.*)", message, re.S)
    if not match:
        return _one_line(message)
    flag_name, value, reason = match.groups()
    flag = flags.FLAGS[flag_name] if flag_name in flags.FLAGS else None
    if "must have a value other than None" in reason:
        if flag_name == name:
            return f"--{name} is required; pass a config file, e.g. {_EXAMPLE}"
        help_text = flag.help.rstrip(".") if flag is not None else ""
        return f"--{flag_name} is required" + (f": {help_text[:1].lower()}{help_text[1:]}"
                                               if help_text else "")
    if flag_name == name:  # the config file itself failed: its last line says why
        lines = [line.strip() for line in reason.splitlines() if line.strip()]
        return f"--{name}={value}: {lines[-1] if lines else 'cannot be loaded'}"
    kind = _KINDS.get(type(flag.parser)) if flag is not None else None
    if kind is None:
        return f"--{flag_name}={value}: {_one_line(reason)}"
    problem, wanted = kind
    example = flag.default_unparsed if flag.default_unparsed is not None else None
    example = f", e.g. --{flag_name}={config_help.format_value(example)}" \
        if example is not None else ""
    return f"--{flag_name}={value} {problem}; pass {wanted}{example}"


def _one_line(error) -> str:
    return " ".join(str(error).split())


def _coerce(name: str) -> None:
    """Give the elements of each tuple override the type of the field's default
    elements (`--config.text_fields=1,2` is two names, not two ints); a field
    whose default is empty keeps what each element reads as."""
    config = flags.FLAGS[name].value
    for flag_name in list(flags.FLAGS):
        flag = flags.FLAGS[flag_name]
        if not (flag_name.startswith(name + ".") and flag.present
                and isinstance(flag.parser, tuple_parser.TupleParser)):
            continue
        default = flag.default_unparsed
        kinds = {type(v) for v in default} if isinstance(default, tuple) else set()
        kind = kinds.pop() if len(kinds) == 1 else None
        values = tuple(_element(v, kind, flag_name) for v in flag.value)
        config_path.set_value(flag_name[len(name) + 1:], config, values)


def _element(value, kind, flag_name: str):
    if kind is None:
        if isinstance(value, str):
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
        return value
    if kind is str:
        return value if isinstance(value, str) else config_help.format_value(value)
    if isinstance(value, kind):
        return value
    parser = {int: flags.IntegerParser(), float: flags.FloatParser(),
              bool: flags.BooleanParser()}.get(kind)
    try:
        return parser.parse(value) if parser is not None else kind(value)
    except (TypeError, ValueError):
        problem, wanted = _KINDS.get(type(parser), ("has the wrong type", kind.__name__))
        raise FlagError(f"--{flag_name}: {value!r} {problem}; give each element as "
                        f"{wanted}") from None
