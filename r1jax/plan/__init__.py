"""``r1jax plan``: the programs a run executes, compiled ahead of time for a target (a Cloud TPU
slice from this host, or the local devices), and what they cost per chip.

  targets.py   slices by name -> devices and the chip's HBM, peak FLOP/s and bandwidth
  programs.py  the train step (and GRPO's sampler prefill / decode) with abstract arguments
  analysis.py  memory, FLOPs, collectives, roofline and MFU of one compiled program
  search.py    the smallest slice of a TPU generation a run fits
"""
