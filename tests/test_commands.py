"""The commands (headgan_jax/commands/): each one's --help and a bad flag, through its own main(argv), in one process
(each command parses into its own absl FlagValues, so they do not clash); the console scripts' table."""
import importlib
import pathlib
import tomllib

import pytest

from headgan_jax import commands

REPO = pathlib.Path(__file__).resolve().parents[1]
# Those that take argv without the program name (train's main takes sys.argv whole, like absl's app.run).
PLAIN = sorted(set(commands.COMMANDS.values()) - {'train'})


def test_every_console_script_is_a_command():
  scripts = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['scripts']
  assert set(scripts.values()) == {'headgan_jax.commands:launch'}
  assert sorted(scripts) == sorted(f'headgan-{name}' for name in commands.COMMANDS)
  assert {p.stem for p in (REPO / 'headgan_jax' / 'commands').glob('*.py')} == set(commands.COMMANDS.values()) | {
      '__init__', 'parsing'}


@pytest.mark.parametrize('module', PLAIN)
def test_help_and_a_bad_flag(module, capsys):
  main = importlib.import_module(f'headgan_jax.commands.{module}').main
  assert main(['--help']) == 0
  out = capsys.readouterr().out
  assert out.startswith('usage: ') and '\nflags:\n  --' in out
  assert main(['--no-such-flag']) == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and 'no-such-flag' in err[0], err


def test_bad_values_are_one_line_naming_the_flag(capsys):
  from headgan_jax.commands import baselines, track  # pylint: disable=import-outside-toplevel
  assert baselines.main(['--workdir', 'w', '--step', 'two']) == 2
  assert capsys.readouterr().err.splitlines() == [
      "error: flag --step=two: invalid literal for int() with base 10: 'two' (--help lists the flags)"]
  assert track.main(['a.mp4']) == 2  # A missing required flag, a missing / extra positional.
  assert track.main(['--out', 'o']) == 2
  assert track.main(['a.mp4', 'b.mp4', '--out', 'o']) == 2
  assert capsys.readouterr().err.splitlines() == [
      'error: --out is required (--help lists the flags)', 'error: missing argument SOURCE (--help lists the flags)',
      "error: unexpected argument 'b.mp4' (--help lists the flags)"]


def test_train_help_and_a_bad_flag(capsys):
  from headgan_jax.commands import train  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as e:
    train.main(['train.py', '--help'])
  assert e.value.code == 0 and '--workdir' in capsys.readouterr().err
  assert train.main(['train.py', '--config', str(REPO / 'configs' / 'tiny.py'), '--no-such-flag']) == 2
  assert capsys.readouterr().err.splitlines() == ["error: Unknown command line flag 'no-such-flag'"]
