"""The old name of the model-fetching command: `python -m headgan_jax.data.facemesh fetch` runs
headgan_jax/tracking/facemesh.py."""
import runpy

if __name__ == '__main__':
  runpy.run_module('headgan_jax.tracking.facemesh', run_name='__main__', alter_sys=True)
