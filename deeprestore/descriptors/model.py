"""The descriptor network, its triplet losses and the triplet sampler.

The descriptor maps a batch of grey patches `(batch, 32, 32, 1)` in [0, 1] to `(batch, 128)` vectors
whose Euclidean distances say how alike the patches are. Training sees triplets (anchor, positive,
negative) stacked as `(batch, 3, 32, 32, 1)`; `triplet_model` wraps the descriptor so that its output
is `(batch, 3, 128)` and a triplet loss (a `keras.losses.Loss` that ignores its target) can score it
inside Keras `fit`.
"""

import keras
import numpy as np

from deeprestore.errors import DeepRestoreError

PATCH_SIZE = 32
DESCRIPTOR_SIZE = 128


@keras.saving.register_keras_serializable(package="deeprestore")
class PatchStandardization(keras.layers.Layer):
    """Each patch minus its mean, divided by its standard deviation (plus `epsilon`): the descriptor
    then cannot see a patch's brightness or contrast, which change between views of one scene.

    Reference:
        Tian, Fan & Wu, 2017 (L2-Net) and Mishchuk et al., 2017 (HardNet) normalise input patches so.
    """

    def __init__(self, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, patches):
        mean = keras.ops.mean(patches, axis=(1, 2, 3), keepdims=True)
        centred = patches - mean
        deviation = keras.ops.sqrt(keras.ops.mean(keras.ops.square(centred), axis=(1, 2, 3), keepdims=True))
        return centred / (deviation + self.epsilon)  # epsilon: flat patches stay finite (zeros)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def descriptor_network(l2_normalise=False, dropout=0.3, seed=0, standardise=True):
    """Seed 004's HardNet-like descriptor: 1,336,928 parameters (1,336,032 trainable).

    Each patch is first standardised (zero mean, unit deviation, `PatchStandardization`, no weights),
    inside the model so that training, evaluation and export all apply it. Then six 3x3 convolutions (32,
    32, 64 stride 2, 64, 128 stride 2, 128 maps; same padding, with biases), each followed by batch
    normalisation and ReLU, dropout, then an 8x8 valid convolution to 128 outputs, reshaped to a vector.

    Reference:
        Mishchuk et al., 2017. Working hard to know your neighbor's margins: local descriptor learning
        loss (HardNet). Hassan, 2019, seed 004 (figure 3) for the exact layer table.

    Args:
        l2_normalise: divide each output by its L2 norm (HardNet).
        dropout: dropout rate before the last convolution.
        seed: seed of the initial weights and of the dropout.
        standardise: standardise each input patch (seed 004 fed raw pixels / 255: `False`).

    Returns:
        A `keras.Model` named `descriptor`.
    """
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((PATCH_SIZE, PATCH_SIZE, 1), name="patches")
    features = PatchStandardization(name="standardise")(inputs) if standardise else inputs
    for index, (filters, strides) in enumerate([(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)], 1):
        features = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name=f"conv{index}",
                                       kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index))(features)
        features = keras.layers.BatchNormalization(name=f"bn{index}")(features)
        features = keras.layers.Activation("relu", name=f"relu{index}")(features)
    features = keras.layers.Dropout(dropout, seed=seed, name="dropout")(features)
    features = keras.layers.Conv2D(DESCRIPTOR_SIZE, 8, padding="valid", name="conv7",
                                   kernel_initializer=initializer)(features)  # (batch, 1, 1, 128)
    outputs = keras.layers.Reshape((DESCRIPTOR_SIZE,), name="descriptor")(features)
    if l2_normalise:
        outputs = keras.layers.UnitNormalization(name="l2_normalise")(outputs)
    return keras.Model(inputs, outputs, name="descriptor")


def triplet_model(descriptor, members=3):
    """Wraps a descriptor so that `(batch, members, 32, 32, 1)` triplets give `(batch, members, 128)`
    descriptors: 3 members (anchor, positive, negative), or 2 for a loss that mines its own negatives
    (`HardestTripletLoss`), which then costs two thirds of the computation."""
    triplets = keras.Input((members, PATCH_SIZE, PATCH_SIZE, 1), name="triplets")
    # The three members share one network: TimeDistributed folds them into the batch and back.
    folded = keras.layers.TimeDistributed(descriptor, name="shared_descriptor")(triplets)
    return keras.Model(triplets, folded, name="triplet_descriptor")


@keras.saving.register_keras_serializable(package="deeprestore")
class TripletLoss(keras.losses.Loss):
    """Seed 004's triplet loss: `max(0, mean((a - p)^2) - mean((a - n)^2) + margin)`, averaged over the batch.

    The distances are mean squared differences over the descriptor's components, as in the N-HPatches
    baseline. `y_true` is ignored; `y_pred` is `(batch, 3, dimension)` (anchor, positive, negative).

    Reference:
        Schroff et al., 2015. FaceNet: a unified embedding for face recognition and clustering.
    """

    def __init__(self, margin=1.0, name="triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        anchor, positive, negative = y_pred[:, 0], y_pred[:, 1], y_pred[:, 2]
        positive_distance = keras.ops.mean(keras.ops.square(anchor - positive), axis=-1)
        negative_distance = keras.ops.mean(keras.ops.square(anchor - negative), axis=-1)
        return keras.ops.maximum(0.0, positive_distance - negative_distance + self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="deeprestore")
class HardestTripletLoss(keras.losses.Loss):
    """HardNet's loss: for each anchor-positive pair, the hardest negative in the batch.

    With Euclidean distances `d(a_i, p_j)`, the negative of pair i is the closest non-matching
    descriptor, `min(min_{j != i} d(a_i, p_j), min_{j != i} d(a_j, p_i))`, and the loss is
    `max(0, margin + d(a_i, p_i) - d_negative)`. `y_pred` is `(batch, 2 or 3, dimension)`: sampled
    negatives `y_pred[:, 2]` are not used, so training feeds pairs (`MEMBERS`); the batch must hold pairs
    from distinct tracks (the sampler's `distinct_tracks` does this).

    Reference:
        Mishchuk et al., 2017. Working hard to know your neighbor's margins: local descriptor learning loss.
    """

    def __init__(self, margin=1.0, name="hardest_triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        anchor, positive = y_pred[:, 0], y_pred[:, 1]
        squared = (keras.ops.sum(anchor**2, axis=-1)[:, None] + keras.ops.sum(positive**2, axis=-1)[None, :]
                   - 2.0 * keras.ops.matmul(anchor, keras.ops.transpose(positive)))
        # eps keeps sqrt differentiable at zero distance.
        distances = keras.ops.sqrt(keras.ops.maximum(squared, 0.0) + 1e-8)  # (batch, batch)
        matching = keras.ops.diagonal(distances)
        # Push the matching pairs out of the minimum with a large offset on the diagonal.
        masked = distances + 1e5 * keras.ops.eye(keras.ops.shape(distances)[0], dtype=distances.dtype)
        hardest = keras.ops.minimum(keras.ops.min(masked, axis=1), keras.ops.min(masked, axis=0))
        return keras.ops.maximum(0.0, self.margin + matching - hardest)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


LOSSES = {"triplet": TripletLoss, "hardest": HardestTripletLoss}
# Members of each training example a loss reads: the hardest-in-batch loss mines its negatives.
MEMBERS = {"triplet": 3, "hardest": 2}


def create_loss(name, margin=1.0):
    """The triplet loss called `name` (`triplet` or `hardest`)."""
    if name not in LOSSES:
        raise DeepRestoreError(f"Unknown loss '{name}'; expected one of {', '.join(LOSSES)}.")
    return LOSSES[name](margin=margin)


class TripletSampler:
    """Draws triplets of patch indices from tracks.

    A track is one row of a sequence: its 16 patches (or fewer, e.g. only the clean images) show the
    same physical patch. The anchor and positive are two different members of one track; the negative
    is a member of another track. Each epoch draws a fresh set from a generator seeded by
    `(seed, epoch)`, so a resumed run sees the triplets an uninterrupted one would.

    Args:
        tracks: int array `(tracks, members)`: row t lists the indices (into the patch array) of track t.
        seed: the base seed.
        groups: optional int array `(tracks,)`: the sequence of each track, for `group_count`.
        member_sets: optional sequence of member-column lists: each anchor-positive pair is then two
            different members of one set, the set drawn uniformly. With a set per level (the reference
            and that level's five images), pairs are as alike as the benchmark's pairs of that level.
    """

    def __init__(self, tracks, seed=0, groups=None, member_sets=None):
        self.tracks = np.asarray(tracks, dtype=np.int64)
        if self.tracks.ndim != 2 or self.tracks.shape[0] < 2 or self.tracks.shape[1] < 2:
            raise DeepRestoreError(f"Triplets need at least 2 tracks of at least 2 patches; got tracks of "
                                   f"shape {self.tracks.shape}.")
        self.seed = seed
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.member_sets = None
        if member_sets is not None:
            self.member_sets = [np.asarray(members, dtype=np.int64) for members in member_sets]
            columns = self.tracks.shape[1]
            if any(len(members) < 2 or members.min() < 0 or members.max() >= columns for members in self.member_sets):
                raise DeepRestoreError(f"Member sets need at least 2 columns each, within the track's {columns}; got "
                                       f"{[members.tolist() for members in self.member_sets]}.")

    def sample(self, count, epoch=0, distinct_tracks=False, batch_size=None, group_count=0):
        """Returns `(count, 3)` patch indices (anchor, positive, negative) for `epoch`.

        Args:
            count: the number of triplets.
            epoch: selects the epoch's fresh set.
            distinct_tracks: draw the anchor tracks of each batch of `batch_size` without repetition
                (needed by the hardest-in-batch loss).
            batch_size: the batch size for `distinct_tracks` and `group_count`.
            group_count: when above 0, each batch of `batch_size` draws its tracks (anchors and
                negatives) from only this many sequences (`groups`), taking more when those hold too few
                tracks: its negatives are then patches of the same images, which is what matching must
                tell apart. 0 draws from all tracks.
        """
        rng = np.random.default_rng([self.seed, epoch])
        track_count, members = self.tracks.shape
        batch_size = min(batch_size or track_count, track_count)
        others = None
        if group_count and self.groups is not None:
            anchors, others = self._grouped(rng, count, batch_size, group_count, distinct_tracks)
        elif distinct_tracks:
            batches = -(-count // batch_size)
            anchors = np.concatenate([rng.permutation(track_count)[:batch_size] for _ in range(batches)])[:count]
        else:
            anchors = rng.integers(0, track_count, count)
        if self.member_sets is None:
            first = rng.integers(0, members, count)
            second = (first + rng.integers(1, members, count)) % members  # a different member of the track
        else:
            first, second = self._members_of_one_set(rng, count)
        if others is None:
            others = (anchors + rng.integers(1, track_count, count)) % track_count  # a different track
        negative_members = rng.integers(0, members, count)
        return np.stack([self.tracks[anchors, first], self.tracks[anchors, second],
                         self.tracks[others, negative_members]], axis=1)

    def _members_of_one_set(self, rng, count):
        """Two different member columns of one set (drawn uniformly) per triplet."""
        sizes = np.array([len(members) for members in self.member_sets])
        table = np.full((len(sizes), sizes.max()), -1, np.int64)
        for row, members in enumerate(self.member_sets):
            table[row, :len(members)] = members
        chosen = rng.integers(0, len(sizes), count)
        first = (rng.random(count) * sizes[chosen]).astype(np.int64)
        second = (first + 1 + (rng.random(count) * (sizes[chosen] - 1)).astype(np.int64)) % sizes[chosen]
        return table[chosen, first], table[chosen, second]

    def _grouped(self, rng, count, batch_size, group_count, distinct_tracks):
        """Anchor and negative tracks, each batch's drawn from the tracks of a few random sequences."""
        names = np.unique(self.groups)
        by_group = {name: np.flatnonzero(self.groups == name) for name in names}
        anchors, others = [], []
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            order = rng.permutation(len(names))
            chosen = order[:group_count]
            pool = np.concatenate([by_group[names[index]] for index in chosen])
            for index in order[group_count:]:  # too few tracks (or one) in the chosen sequences
                if len(pool) >= max(size if distinct_tracks else 2, 2):
                    break
                pool = np.concatenate([pool, by_group[names[index]]])
            if distinct_tracks:
                picked = rng.permutation(len(pool))[:size]
                picked = np.concatenate([picked, rng.integers(0, len(pool), size - len(picked))])
            else:
                picked = rng.integers(0, len(pool), size)
            other = (picked + rng.integers(1, len(pool), size)) % len(pool)  # a different track of the pool
            anchors.append(pool[picked])
            others.append(pool[other])
        return np.concatenate(anchors), np.concatenate(others)


def describe_patches(descriptor, patches, batch_size=512):
    """Descriptors `(count, dimension)` float32 of grey patches `(count, 32, 32)` or `(count, 32, 32, 1)` in [0, 1]."""
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim == 3:
        patches = patches[..., None]
    if len(patches) == 0:
        return np.zeros((0, descriptor.output_shape[-1]), np.float32)
    return np.asarray(descriptor.predict(patches, batch_size=batch_size, verbose=0), dtype=np.float32)
