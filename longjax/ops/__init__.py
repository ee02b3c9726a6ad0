"""Attention operators: one entry point (`attention`) over reference, blockwise, kernel and ring
paths, plus the zigzag load-balancing permutation."""

from longjax.ops.attention import IMPLEMENTATIONS, attention
from longjax.ops.ring import LAYOUTS, RingOptions, ring_attention, sequence_axis_size
from longjax.ops.zigzag import unzigzag, zigzag

__all__ = ["IMPLEMENTATIONS", "LAYOUTS", "RingOptions", "attention", "ring_attention",
           "sequence_axis_size", "unzigzag", "zigzag"]
