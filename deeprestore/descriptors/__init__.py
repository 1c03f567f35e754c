"""Patch descriptors and the HPatches benchmark.

A *sequence* is one scene seen in 16 images (`ref`, `e1..e5`, `h1..h5`, `t1..t5`), each a stack of
patches whose row j is the same physical patch in all 16 (a *track*). `hpatches` reads and checks
such datasets, `synthetic` makes one from the bundled photos, `model` is the descriptor network with
its triplet losses and sampler, `tasks` and `evaluation` are the HPatches benchmark protocol, and
`export` writes and reads descriptors in the benchmark's CSV layout.
"""
