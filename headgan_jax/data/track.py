"""The old name of the tracking command: `python -m headgan_jax.data.track` runs headgan_jax/tracking/track.py."""
import runpy

if __name__ == '__main__':
  runpy.run_module('headgan_jax.tracking.track', run_name='__main__', alter_sys=True)
