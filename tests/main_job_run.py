"""The README's first command as the tests run it (not a test module): its main job (headgan_jax.main_job) on a
fresh work folder, shortened - the demo set built from cuts of two of the clips (3 s of driving.mp4 to train on,
0.7 s of talk-05 held out), 1 train step, 16 evaluated frames per clip, the talk-05 cut as the driving video.

3 s of driving.mp4, not the 0.7 s cuts of the session's demo build: FVD needs clips of 16 frames, and the held-out
20% of a 0.7 s clip is 4; talk-05 is held out whole, and its 21 frames are enough. Every frame of the cuts is tracked
by the build and the reenactment.

conftest.py's `main_job` fixture runs it once per test run; test_readme.py checks what it wrote and runs it again,
and test_reenact.py / test_checkpoints.py reenact with the work folder it trained (1 step of configs/demo.py, 64 px,
on one CPU device), so the suite trains that model once.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys

import conftest
import dataset_helpers

REPO = pathlib.Path(__file__).resolve().parents[1]


def first_command() -> list[str]:
  """The main-job part of the README's first command (after `bash scripts/setup.sh &&`)."""
  text = (REPO / 'README.md').read_text()
  block = re.search(r'```bash\n(.*?)\n', text, re.S).group(1)
  setup, _, job = block.partition('&&')
  assert 'scripts/setup.sh' in setup and 'headgan_jax.main_job' in job, block
  return shlex.split(job)


@dataclasses.dataclass(frozen=True)
class MainJob:
  """A finished main job: its work folder, the driving clip it reenacted, the command and environment it ran with
  (to run it again) and what it printed."""
  workdir: pathlib.Path
  driving: pathlib.Path
  cmd: list[str]
  env: dict[str, str]
  stdout: str


def cut_clips(fixtures_dir: pathlib.Path, clips: pathlib.Path) -> None:
  """The shortened demo set's clips: 3 s of driving.mp4 (trained on) and 0.7 s of talk-05 (held out, the driver)."""
  dataset_helpers.cut_clip(fixtures_dir / 'driving.mp4', clips / 'driving.mp4', 3.0)
  dataset_helpers.cut_clip(fixtures_dir / 'demo' / 'talk-05.mp4', clips / 'demo' / 'talk-05.mp4', 0.7)


def shortened_command(root: pathlib.Path) -> tuple[list[str], pathlib.Path]:
  """(the README's main-job command with the tests' shortening, the driving clip), for clips cut into root/clips."""
  clips = root / 'clips'
  driving = clips / 'demo' / 'talk-05.mp4'
  cmd = first_command()
  assert cmd[0] == '.venv/bin/python' and '--workdir' in cmd
  i = cmd.index('--workdir')
  cmd[i + 1] = str(root / 'demo')
  cmd[0] = sys.executable
  cmd += ['--steps', '1', '--clips_dir', str(clips), '--eval_max_frames', '16', '--driving', str(driving)]
  return cmd, driving


def run(fixtures_dir: pathlib.Path, root: pathlib.Path) -> MainJob:
  """Runs the shortened main job in root (once: a second call reads what the first printed)."""
  cmd, driving = shortened_command(root)
  # One CPU device, as on a user's machine (not the tests' 8), compiled with the tests' fast XLA:CPU flags: the
  # outputs asserted do not depend on how hard LLVM optimises, and XLA's default flags are what costs most here.
  env = dict(os.environ, XLA_FLAGS=conftest.FAST_COMPILE_XLA_FLAGS)
  printed = root / 'stdout.txt'
  if not printed.exists():  # Another worker may have run it already: its clips and outputs are there.
    cut_clips(fixtures_dir, root / 'clips')
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    tmp = printed.with_suffix('.tmp')
    tmp.write_text(proc.stdout)
    tmp.replace(printed)
  return MainJob(root / 'demo', driving, cmd, env, printed.read_text())
