"""Attention operators: one entry point (`attention`) over reference, blockwise, kernel and ring paths."""

from longjax.ops.attention import attention

__all__ = ["attention"]
