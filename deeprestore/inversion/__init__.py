"""Inverting network layers: learned modules stacked to go deep, and Zeiler & Fergus's deconvnet.

An *inversion module* (`modules`) undoes one operation of a network; a *module spec* (`specs`) says
what it takes, what it reconstructs and how it is trained; a *stack* (`stack`) is modules built for a
network and wired for training or chained to reconstruct. `learned.invert_learned` and
`deconvnet.invert_deconvnet` are the recipe-level entry points the `invert` command calls.
"""

from deeprestore.inversion.modules import ModuleSpec, build_module, output_size
from deeprestore.inversion.specs import check_specs, default_specs, load_specs, save_specs
from deeprestore.inversion.stack import MODES, Stack

__all__ = ["MODES", "ModuleSpec", "Stack", "build_module", "check_specs", "default_specs", "load_specs",
           "output_size", "save_specs"]
