"""The commands' one flags library: absl.flags, each command on its own FlagValues (no global state, so several
commands can be imported and run in one process), argv parsed by the command's main(argv) itself.

`parse` prints `--help` (the command's description and every flag's help) and ends the command with status 0, or
prints ONE line naming the bad flag / argument to stderr and ends it with status 2 (argparse's status), never a
traceback: both by raising Exit, which main() turns into its return value.
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

HELP = ('-h', '--help', '-help', '--helpfull')


class Exit(Exception):
  """The command line ended the command before any work: help printed (code 0) or a bad command line (code 2)."""

  def __init__(self, code: int):
    super().__init__(code)
    self.code = code


def fail(message: str) -> Exit:
  """Prints `message` as the command's one error line; the Exit (status 2) to raise."""
  print(f'error: {message} (--help lists the flags)', file=sys.stderr)
  return Exit(2)


def parse(fv: flags.FlagValues, argv: Sequence[str] | None, description: str, usage: str, *,
          positionals: Sequence[str] = (), more: bool = False, required: Sequence[str] = (),
          choices: dict[str, Sequence[str]] | None = None) -> list[str]:
  """Parses argv (without the program name; None: sys.argv[1:]) into `fv`; returns the positional arguments.

  positionals: their names (for the messages), each one required; more: any number of further ones (at least one
  when `positionals` is empty). required: flags that must be given. choices: positional name -> allowed values.
  Flags and positionals may come in any order (absl's GNU-style parsing)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in HELP for a in argv):
    print(f'usage: {usage}\n\n{description.strip()}\n\nflags:\n{help_text(fv, required)}')
    raise Exit(0)
  try:
    rest = fv([usage.split()[0], *argv])[1:]
  except flags.Error as e:
    raise fail(str(e).splitlines()[0]) from None
  for name in required:
    if fv[name].value is None:
      raise fail(f'--{name} is required')
  if len(rest) < len(positionals) + (more and not positionals):
    missing = positionals[len(rest):] or [f'{positionals[-1] if positionals else "argument"}...']
    raise fail('missing argument ' + ' '.join(m.upper() for m in missing))
  if len(rest) > len(positionals) and not more:
    raise fail(f'unexpected argument {rest[len(positionals)]!r}')
  for name, value in zip(positionals, rest):
    allowed = (choices or {}).get(name)
    if allowed is not None and value not in allowed:
      raise fail(f'{name.upper()} is {value!r}, not one of {", ".join(allowed)}')
  return rest


def help_text(fv: flags.FlagValues, required: Sequence[str] = ()) -> str:
  """Every flag the command defined, with its help and default (absl's own --flagfile / --undefok left out)."""
  lines = []
  for name in sorted(fv):
    flag = fv[name]
    if name != flag.name or name in ('flagfile', 'undefok'):
      continue
    default = f' (default: {flag.default_as_str})' if flag.default is not None else ''
    default = ' (required)' if name in required else default
    lines.append(f"  --{'[no]' if flag.boolean else ''}{name}: {flag.help}{default}")
  return '\n'.join(lines)
