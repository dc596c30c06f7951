"""Command-line edges: every error ends as one line on stderr and a non-zero exit, never a traceback."""
import os
import sys

import click

# Errors that mean "bad input or environment" (exit 1); anything else is a bug, still reported in one line.
USER_ERRORS = (ValueError, OSError, RuntimeError, KeyError, MemoryError)


def run_cli(group: click.Group, prog: str, argv=None) -> int:
    try:
        result = group.main(args=argv, prog_name=prog, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        return _fail(prog, e.format_message(), 2)
    except click.ClickException as e:
        return _fail(prog, e.format_message(), e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _fail(prog, "interrupted", 130)
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): not an error worth a message
        sys.stderr.close()
        return 141
    except USER_ERRORS as e:
        if os.environ.get("KVANT_DEBUG"):
            raise
        return _fail(prog, str(e) or type(e).__name__, 1)
    except Exception as e:  # a bug: still one line, KVANT_DEBUG=1 shows the traceback
        if os.environ.get("KVANT_DEBUG"):
            raise
        return _fail(prog, f"internal error: {type(e).__name__}: {e}", 1)


def _fail(prog, message, code):
    one_line = " ".join(str(message).split())
    print(f"{prog}: error: {one_line}", file=sys.stderr, flush=True)
    return code
