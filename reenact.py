"""One image + a driving video -> a talking-head video with sound: the command line of headgan_jax/reenact.py.

  python reenact.py --checkpoint WORKDIR --reference face.png --driving talk.mp4 --out out.mp4 [--audio speech.wav]
      [--side-by-side] [--batch 8]

Exit status: 0 written; 2 bad input (one message, no traceback).
"""
import sys

from headgan_jax import host_malloc

if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  from headgan_jax import reenact
  sys.exit(reenact.main())
