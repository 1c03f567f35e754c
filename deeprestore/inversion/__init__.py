"""Inverting network layers: learned modules stacked to go deep, and Zeiler & Fergus's deconvnet.

An *inversion module* (`modules`) undoes one operation of a network; a *module spec* (`specs`) says
what it takes, what it reconstructs and how it is trained; a *stack* (`stack`) is modules built for a
network and wired for training or chained to reconstruct. `learned.invert_learned` and
`deconvnet.invert_deconvnet` are the recipe-level entry points the `invert` command calls. The
package imports none of them, so that reading a spec file (`specs`) needs no Keras.
"""
