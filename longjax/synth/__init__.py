"""Long-context data synthesis (TF-free): corpus store, chunking, embedders, retrieval, methods.

Entry point: `python -m longjax.synth build|preview` (see docs/synthesis.md). Submodules are
imported on demand so that `import longjax.synth` stays light (no JAX, ScaNN or transformers).
"""
