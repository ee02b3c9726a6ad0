"""Long-context evaluation: RULER/HELMET-style synthetic tasks, scoring, loss by position, and
the `python -m longjax.eval` report."""
