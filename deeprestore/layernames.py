"""Layer naming: which tensor a layer name means, and names written under an older meaning read with it.

Naming 2 (this version) gives every name that keras.applications' VGG16 and VGG19 use the tensor it
has there: `block4_conv3` is the ReLU output of block 4's third convolution (keras.applications'
convolutions carry `activation="relu"`), the convolution's own output before the ReLU is
`block4_conv3_preact`, and the head's `fc1`, `fc2` and `predictions` are `relu6`, `relu7` and `prob`.
Naming 1 (earlier versions) gave those names to the convolutions: `block4_conv3` was the
pre-activation, the ReLU output was `block4_relu3` (still an alias), and `fc1`, `fc2`, `predictions`
were `fc6`, `fc7`, `fc8`. Caffe/MatConvNet aliases (`conv4_3` before the ReLU, `relu4_3` after it,
`fc6`) and the names of AlexNet, `tiny` and model files mean what they always meant.

Every run's `config.json`, every item record and every saved stack records the naming it was written
under (`layer_naming`); a file without it was written under naming 1, and the functions here rewrite
its VGG layer names to the names that mean the same tensors now, so `--resume`, a named run's
resubmission, `summary` and a stack's modules read an old run with its old meaning.
"""

import re

LAYER_NAMING = 2
# Networks whose names changed meaning from naming 1 to naming 2.
RENAMED_NETWORKS = ("vgg16", "vgg19")
# Settings fields that hold layer names as typed: alone, or first in `LAYER:...` objective strings.
LAYER_FIELDS = ("layer", "layers", "to", "channels", "neurons", "cycle", "content_layer", "style_layers", "source",
                "target")
# Config entries the recipes add with canonical layer names (invert's `layer`, dream's `layers`, ...).
RESOLVED_FIELDS = ("layer", "to", "layers", "content_layer", "style_layers")
_CONVOLUTION = re.compile(r"^block\d+_conv\d+$")
_RELU = re.compile(r"^block(\d+)_relu(\d+)$")
# keras.applications' head names as aliases meant under naming 1.
_OLD_HEAD = {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}


def upgrade_layer(name):
    """A layer name as typed under naming 1 (a name or an alias), spelled so it means the same tensor now.

    `block4_conv3` becomes `block4_conv3_preact` and `fc1`, `fc2`, `predictions` become `fc6`, `fc7`,
    `fc8`; every other name (`block4_relu3`, `conv4_3`, `pool1`) kept its meaning and is returned as is.
    """
    if _CONVOLUTION.match(name):
        return f"{name}_preact"
    return _OLD_HEAD.get(name, name)


def upgrade_canonical(name):
    """A canonical layer name of naming 1 as naming 2 names the same layer: the convolution
    `block4_conv3` is `block4_conv3_preact` and its ReLU `block4_relu3` is `block4_conv3`."""
    if _CONVOLUTION.match(name):
        return f"{name}_preact"
    relu = _RELU.match(name)
    return f"block{relu[1]}_conv{relu[2]}" if relu else name


def upgrade_term(text):
    """An objective option of naming 1 (`block4_conv3:0.5`, `block4_conv3:12`) with its layer upgraded."""
    layer, separator, rest = text.partition(":")
    return upgrade_layer(layer) + separator + rest


def upgrade_loss_name(name):
    """A dotted loss name of naming 1 (`l2.block4_relu3`, `channel.block4_conv3.12`) with its canonical
    layer renamed as naming 2 names it (`l2.block4_conv3`, `channel.block4_conv3_preact.12`)."""
    return ".".join(upgrade_canonical(part) for part in name.split("."))


def renamed(network):
    """Whether names of `network` (a registry name or a model file path) changed meaning."""
    return network in RENAMED_NETWORKS


def upgrade_settings(settings):
    """A stored settings dict of naming 1 with its layer fields upgraded (a new dict)."""
    upgraded = dict(settings)
    for field in LAYER_FIELDS:
        if field in upgraded:
            upgraded[field] = _upgraded(upgraded[field], upgrade_term)
    return upgraded


def _upgraded(value, upgrade):
    """`upgrade` applied to a name, or to each name of a list; anything else as it is."""
    if isinstance(value, str):
        return upgrade(value)
    if isinstance(value, list):
        return [upgrade(item) if isinstance(item, str) else item for item in value]
    return value


def upgrade_modules(modules):
    """Module specs (dicts) of naming 1 with their canonical `input` and `target` layers renamed."""
    return [{**module, **{field: upgrade_canonical(module[field]) for field in ("input", "target")
                          if isinstance(module.get(field), str)}}
            if isinstance(module, dict) else module for module in modules]


def config_network(config):
    """The network a run's config says it used, or None."""
    settings = config.get("settings") if isinstance(config, dict) else None
    return settings.get("network") if isinstance(settings, dict) else None


def upgrade_config(config):
    """A run's `config.json` contents as naming 2 reads them.

    A config that records `layer_naming` is returned unchanged. One without it was written under
    naming 1: for a VGG run its settings' layer names (and those of `resolved`) and the canonical names
    the recipes recorded (`RESOLVED_FIELDS`, a stack's `modules` and `scales`) are upgraded, and the
    result records `layer_naming` 2 with `layer_naming_read_from` 1, so rewriting it keeps the upgrade
    and says where it came from. The `stages` a dream recorded (objectives as text) are left as written.
    """
    if not isinstance(config, dict) or "layer_naming" in config:
        return config
    upgraded = {**config, "layer_naming": LAYER_NAMING, "layer_naming_read_from": 1}
    if not renamed(config_network(config)):
        return upgraded
    for key in ("settings", "resolved"):
        if isinstance(config.get(key), dict):
            upgraded[key] = upgrade_settings(config[key])
    if isinstance(config.get("modules"), list):
        upgraded["modules"] = upgrade_modules(config["modules"])
    for key in RESOLVED_FIELDS:
        if key in config:
            upgraded[key] = _upgraded(config[key], upgrade_canonical)
    if isinstance(config.get("scales"), dict):
        upgraded["scales"] = {upgrade_canonical(layer): value for layer, value in config["scales"].items()}
    return upgraded


def upgrade_record(record, network):
    """An item record (`complete/<item>.json`) as naming 2 reads it: one without `layer_naming` from a
    VGG run has its metrics' loss names upgraded (`l2.block4_relu3` -> `l2.block4_conv3`)."""
    if "layer_naming" in record or not renamed(network) or not isinstance(record.get("metrics"), dict):
        return record
    return {**record, "metrics": {upgrade_loss_name(name): value for name, value in record["metrics"].items()}}
