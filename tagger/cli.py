"""`tagger` on the command line, through fire: thin wrappers that print and return nothing.

Exit codes: 0 success, 1 internal error, 2 bad input, 3 output not writable.
"""

from __future__ import annotations

import os
import sys

import fire

from tagger import api
from tagger.errors import TaggerError

__all__ = ["main", "Commands"]


class Commands:
    """Tag every node of an ONNX model with the nn.Module it came from."""

    def retag(self, model: str, output: str | None = None, report: str | None = None, inplace: bool = False) -> None:
        """Tag MODEL and write MODEL stem + .tagged.onnx (or --output PATH, or --inplace).

        --report PATH also writes the coverage report (.json or .md).
        """
        summary = api.retag(str(model), _optional_path(output), _optional_path(report), bool(inplace))
        print(summary.summary())

    def report(self, model: str, json: bool = False, markdown: bool = False) -> None:
        """Print MODEL's coverage report (text; --json or --markdown); writes nothing."""
        result = api.report(str(model))
        if json:
            print(result.to_json())
        elif markdown:
            print(result.to_markdown(), end="")
        else:
            print(result.to_text())

    def tree(self, model: str, depth: int | None = None) -> None:
        """Print MODEL's module tree with node counts, down to --depth N levels."""
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
            raise TaggerError(f"--depth must be a non-negative integer, got {depth!r}")
        print(api.report(str(model)).tree(depth))


def _optional_path(value: object) -> str | None:
    return None if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a TaggerError becomes one line on stderr and its exit code."""
    try:
        fire.Fire(Commands, command=argv, name="tagger")
    except TaggerError as exc:
        print(f"tagger: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's final flush
        return 0
    except KeyboardInterrupt:
        print("tagger: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a user gets one line, never a traceback
        print(f"tagger: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
