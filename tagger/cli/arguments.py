"""The command line read before fire runs it: help, fire's own flags, every flag checked.

fire calls a command first and complains afterwards about what it could not use (by then `retag`
has written), reads `report MODEL -h` as `--html`, and keeps only the last of repeated flags.
So the arguments are read here first, as fire would read them:

1. `-h`/`--help` anywhere answers with the named command's help, made plain (`help_text`);
2. fire's own flags go after a last `--` and nothing else does (`split_fire_flags`);
3. every flag is checked against the command's parameters, with the closest valid one offered,
   and every word against its required arguments (`check_arguments`);
4. repeated `--dim` flags are joined into one for fire (`fire_arguments`);
5. a value fire parsed is checked where only the command line gives it (`check_text`, `check_flag`).

Every refusal is one `InputError` line (exit 2), before any work; an error of the library names
parameters, which the command line prints as its flags (`error_line`).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
from collections.abc import Callable, Mapping

from fire import helptext, parser
from fire.trace import FireTrace

from tagger.errors import InputError, TaggerError, one_line

__all__ = [
    "as_flag",
    "check_arguments",
    "check_flag",
    "check_text",
    "command_names",
    "error_line",
    "fire_arguments",
    "help_text",
    "split_fire_flags",
]


def as_flag(parameter: str) -> str:
    """A parameter as the command line spells it (`max_fallback` -> `--max_fallback`): the commands
    take the library's parameter names."""
    return f"--{parameter}"


def error_line(error: TaggerError) -> str:
    """The one line the command line prints for `error`: each parameter it names as its flag."""
    return one_line(error.spelled(as_flag))


def check_text(name: str, value: object) -> str | None:
    """One value, as text: fire reads `--module 0` as an int and `--module 0.10` as a float
    (None passes; a flag without value, a list or a dict is refused)."""
    if value is None:
        return None
    if isinstance(value, bool | list | tuple | dict):
        raise InputError(f"--{name} needs one value, got {value!r}")
    return str(value)


def check_flag(name: str, value: object) -> bool:
    """A flag: fire gives a flag followed by a value that value instead of True."""
    if not isinstance(value, bool):
        raise InputError(f"--{name} takes no value, got {value!r}: put the flags after the paths")
    return value


def command_names(commands: object) -> list[str]:
    """The commands: the public methods of `commands` (`tagger.cli.Commands`), sorted."""
    return sorted(name for name, _ in inspect.getmembers(type(commands), inspect.isfunction) if not name.startswith("_"))


def help_text(commands: object, args: list[str], asked: bool) -> str | None:
    """The help text `-h`/`--help` (or fire's `-- --help`) asks for, or None. Answered here, on stdout,
    for the command named first (fire would read `report MODEL -h` as `--html`, and run `report MODEL --help`)."""
    if not asked and not any(arg in ("-h", "--help") for arg in args):
        return None
    fire_trace = FireTrace(commands, name="tagger")
    component: object = commands
    if args and args[0] in command_names(commands):
        component = getattr(commands, args[0])
        fire_trace.AddAccessedProperty(component, args[0], [args[0]], None, None)
    return _readable(helptext.HelpText(component, trace=fire_trace))


def _readable(text: str) -> str:
    """fire's help made plain: `Type: str`, not `Optional['str | None']` (our annotations are strings);
    no short flags (`-h` means help, and fire lists `-m` for --markdown though `-m` is ambiguous with
    MODEL); a yes/no flag shown without a value (`--json`, not `--json=JSON`)."""
    text = re.sub(r"Type: (?:Optional\[)?'([^']*?)(?: \| None)?'\]?", r"Type: \1", text)
    text = re.sub(r"^(\s+)-[a-zA-Z], --", r"\1--", text, flags=re.MULTILINE)
    return re.sub(r"--(\w+)=\S+(\n\s+Type: bool)", r"--\1\2", text)


def fire_arguments(argv: list[str]) -> list[str]:
    """fire's view of the arguments: repeated `--dim` flags joined into one (fire keeps the last)."""
    out: list[str] = []
    dims: list[str] = []
    position = 0
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--dim" and i + 1 < len(argv):
            position = position if dims else len(out)
            dims.append(argv[i + 1])
            i += 1
        elif arg.startswith("--dim="):
            position = position if dims else len(out)
            dims.append(arg.removeprefix("--dim="))
        else:
            out.append(arg)
        i += 1
    if dims:
        out[position:position] = ["--dim", ",".join(dims)]
    return out


def split_fire_flags(argv: list[str]) -> tuple[list[str], argparse.Namespace]:
    """fire's split: the command's arguments, then fire's own flags after the last `--` (--help,
    --completion, --trace, ...). fire ignores any other word there; here it is refused."""
    args, after = parser.SeparateFlagArgs(argv)
    fire_flags = parser.CreateParser()
    fire_flags.exit_on_error = False
    try:
        flags, unknown = fire_flags.parse_known_args(after)
    except argparse.ArgumentError as exc:
        raise InputError(f"after --: {exc}") from None
    if unknown:
        raise InputError(f"{unknown[0]} after --: only fire's own flags go there (--help, --completion, --trace)")
    return args, flags


def check_arguments(commands: object, args: list[str], separator: str) -> None:
    """Refuse an unknown command, flag or argument before anything runs: fire calls the command
    first and only then complains about what it could not use (by then retag has written)."""
    if separator in args:  # fire would apply what follows to the command's result, which is None
        rest = args[args.index(separator) + 1 :]
        if rest:
            raise InputError(f"{rest[0]} after the separator {separator}: nothing takes arguments there")
        args = args[: args.index(separator)]
    if not args:
        return  # fire lists the commands
    command, *rest = args
    names = command_names(commands)
    if command not in names:
        hint = _did_you_mean(command, names) or f"; the commands: {', '.join(names)}"
        raise InputError(f"unknown command {command}{hint}")
    _check_call(getattr(commands, command), command, rest)


def _check_call(method: Callable, command: str, args: list[str]) -> None:
    """Bind `args` to the command's parameters as fire does, refusing what fire would leave over.
    Stricter than fire on purpose: words fill only the required parameters (MODEL; A B; audit's
    PATHS), never the flags after them (fire would write `retag a.onnx b.onnx` into b.onnx)."""
    params = inspect.signature(method).parameters
    given: set[str] = set()
    words: list[str] = []
    i = 0
    while i < len(args):
        if _is_flag(args[i]):
            takes_next = "=" not in args[i] and i + 1 < len(args) and not _is_flag(args[i + 1])
            given.add(_parameter(command, args[i], params, args[i + 1] if takes_next else None))
            i += takes_next
        else:
            words.append(args[i])
        i += 1
    needed = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
    varargs = [n for n, p in params.items() if p.kind is p.VAR_POSITIONAL]
    usage = " ".join(["tagger", command, *(n.upper() for n in needed), *(n.upper() + "..." for n in varargs), "[flags]"])
    needed = [n for n in needed if n not in given]
    if len(words) < len(needed):
        raise InputError(f"missing {needed[len(words)].upper()} for {command}; usage: {usage}")
    if len(words) > len(needed) and not varargs:
        raise InputError(f"unexpected argument {words[len(needed)]} for {command}; usage: {usage}")


def _parameter(command: str, arg: str, params: Mapping[str, inspect.Parameter], value: str | None) -> str:
    """The parameter flag `arg` sets, read as fire reads it: `--out-dir` is `--out_dir`, `-o` the one
    parameter starting with o, `--noX` sets yes/no flag X to False (and takes no value)."""
    flag = arg.split("=", 1)[0]
    key = flag.lstrip("-").replace("-", "_")
    names = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]
    yes_no = [n for n in names if isinstance(params[n].default, bool)]
    if key in names:
        return key
    if key.startswith("no") and key[2:] in yes_no:
        if "=" in arg or value is not None:
            raise InputError(f"{flag} takes no value, got {arg.partition('=')[2] or value}")
        return key[2:]
    shortcut = [n for n in names if len(key) == 1 and n[0] == key]
    if len(shortcut) == 1:
        return shortcut[0]
    if shortcut:
        raise InputError(f"ambiguous flag {flag} for {command}: {' or '.join('--' + n for n in shortcut)}")
    hint = _did_you_mean(key, names + ["no" + n for n in yes_no], "--") or f"; see tagger {command} --help"
    raise InputError(f"unknown flag {flag} for {command}{hint}")


def _is_flag(arg: str) -> bool:
    """fire's test: `--anything`, or `-` and a letter (`-1` is a number, `-` the separator)."""
    return arg.startswith("--") or re.match(r"-[a-zA-Z]", arg) is not None


def _did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    """The closest choice as `; did you mean X?`, or "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""
