"""Mesh axis names: defined here, the lowest layer that needs them, and imported upward.

The ring (ring.py) shards S over `sequence`, the batch over `data` x `fsdp` and heads over
`tensor`; the trainer's mesh (train/mesh.py) is built from these same four names.
"""

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
SEQUENCE_AXIS = "sequence"
HEAD_AXIS = "tensor"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, SEQUENCE_AXIS, HEAD_AXIS)
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
