"""The main job's side-by-side stages (headgan_jax/main_job.py): both run, the second's output goes to its log
file, each is timed by its own end, and a failing one is named with its command and log."""
import sys

import pytest

from headgan_jax import main_job


def _py(code: str) -> list[str]:
  return [sys.executable, '-c', code]


def test_side_by_side_stages_run_concurrently_and_log(tmp_path, capfd):
  log: list[dict] = []
  main_job.run_stages_side_by_side([('slow', _py('import time; time.sleep(1.5); print("slow", "out", sep="-")')),
                                    ('fast', _py('print("fast", "out", sep="-")'))], log, str(tmp_path))
  by_name = {e['stage']: e for e in log}
  assert set(by_name) == {'slow', 'fast'} and all(e['status'] == 0 for e in log)
  assert by_name['fast']['seconds'] < by_name['slow']['seconds']  # Timed by its own end, not the first's.
  assert (tmp_path / 'fast.log').read_text().strip() == 'fast-out'  # The second stage's output.
  printed = capfd.readouterr().out  # The subprocesses write to the file descriptors.
  assert 'slow-out' in printed and 'fast-out' not in printed and str(tmp_path / 'fast.log') in printed


def test_a_failing_stage_is_named_with_its_log(tmp_path):
  log: list[dict] = []
  with pytest.raises(main_job.StageFailed, match=r'stage second failed \(exit status 3\).*second\.log'):
    main_job.run_stages_side_by_side([('first', _py('pass')),
                                      ('second', _py('import sys; print("boom"); sys.exit(3)'))], log, str(tmp_path))
  assert (tmp_path / 'second.log').read_text().strip() == 'boom'
  assert {e['stage']: e['status'] for e in log} == {'first': 0, 'second': 3}
