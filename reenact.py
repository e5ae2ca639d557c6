"""One image + a driving video -> a talking-head video with sound: the command line of headgan_jax/reenact.py.

  python reenact.py --checkpoint WORKDIR --reference face.png --driving talk.mp4 --out out.mp4 [--audio speech.wav]
      [--side-by-side] [--batch 8]

Exit status: 0 written; 2 bad input (one message, no traceback). Flags: headgan_jax/commands/reenact.py.
"""
import sys

from headgan_jax import commands

if __name__ == '__main__':
  sys.exit(commands.start('reenact'))  # tcmalloc first (headgan_jax/host_malloc.py), then the command.
