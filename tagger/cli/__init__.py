"""`tagger` on the command line, through fire: thin wrappers that print and return nothing.

Every argument is checked against the command's signature before anything runs (fire would run
the command first and complain about a mistyped flag afterwards: `tagger.cli.arguments`).

Exit codes (`tagger.errors.EXIT_CODES`): 0 success, 1 internal error, 2 bad input, option or flag,
3 output not writable; `audit` also 4 (a model missed a threshold) and 5 (a file could not be
audited); `extract` 5 (--all: a module could not be extracted) and 6 (--verify failed).
"""

from __future__ import annotations

import os
import sys

import fire

from tagger.cli.arguments import as_flag, check_arguments, error_line, fire_arguments, help_text, split_fire_flags
from tagger.cli.module_commands import ModuleCommands
from tagger.cli.tagging_commands import TaggingCommands
from tagger.errors import TaggerError, one_line
from tagger.text import spelling

__all__ = ["main", "Commands"]


class Commands(TaggingCommands, ModuleCommands):
    """Tag every node of an ONNX model with the nn.Module it came from.

    Example: tagger retag model.onnx && tagger tree model.tagged.onnx --depth 3
    """


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a TaggerError becomes one line on stderr and its exit code."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    commands = Commands()  # an instance, not the class: fire then lists the commands when none is given
    try:
        args, fire_flags = split_fire_flags(argv)
        text = help_text(commands, args, fire_flags.help)
        if text is not None:
            print(text)
            return 0
        check_arguments(commands, args, fire_flags.separator)  # before fire, which runs first and complains after
        with spelling(as_flag):  # the reports' notes name the flags
            fire.Fire(commands, command=fire_arguments(argv), name="tagger")
    except TaggerError as exc:
        print(f"tagger: error: {error_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's final flush
        return 0
    except KeyboardInterrupt:
        print("tagger: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a user gets one line, never a traceback
        print(f"tagger: internal error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
