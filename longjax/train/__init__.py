"""Training: mesh + logical sharding rules, chunked loss, AdamW step, orbax checkpoints, metrics and
the loop (`trainer.train`); `python -m longjax.train` is the gin entry point. TF-free."""
