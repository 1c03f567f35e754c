"""A small HPatches-format dataset made from the bundled photos, with known warps.

Each photo gives two sequences, `v_<photo>` (viewpoint: five homographies of increasing strength,
moderate photometric change) and `i_<photo>` (illumination: five photometric changes of increasing
strength, slight homographies). Photometric change is what HPatches' illumination sequences show:
brightness, contrast, gamma and shading (a gradient and a soft light spot). Image k of a sequence is
the photo warped by its homography `H_k` (a real resampling), changed photometrically and given sensor
noise. Patches are taken at corner locations of the reference; in image k the patch frame is the
reference frame carried through `H_k` (its position `H_k(x)` and local Jacobian), then perturbed by the
level's geometric jitter (`e` < `h` < `t`), as HPatches does with its easy, hard and tough patches. So
row j of every stack is a real correspondence. Optional `_noise` twins add our own N-HPatches-like
perturbation (the N-HPatches noise model was never published): Gaussian noise plus salt-and-pepper.
Everything is seeded.

`HELDOUT_PHOTOS` are other scikit-image photos, none of them in `SAMPLES` (the training photos):
`HELDOUT` makes from them a held-out evaluation set that training never sees. `STEREO` is real
correspondences that training never sees either: scikit-image's Middlebury motorcycle pair with its
disparity map, one viewpoint sequence whose reference is the left view and whose 15 other images are
the right view at the level's jitter (no made-up warp or lighting: the right camera's own).
"""

import dataclasses
import json
import pathlib

import imageio.v3 as imageio
import numpy as np
import scipy.ndimage
import skimage.feature
import skimage.transform

from deeprestore.descriptors.hpatches import IMAGES, NOISE_SUFFIX
from deeprestore.images import SAMPLES, load_image, to_uint8

# Geometric jitter of the e/h/t levels: rotation (degrees), log-scale and shift (fraction of the
# patch side) standard deviations. Our choice, growing like HPatches' easy/hard/tough overlaps.
JITTER = {"e": (4.0, 0.04, 0.03), "h": (10.0, 0.10, 0.07), "t": (18.0, 0.18, 0.12)}
SENSOR_NOISE = 0.01  # standard deviation of the noise added to every image, in [0, 1] units
# Strength of the geometric and photometric change at image 5 of each kind of sequence (image k has k / 5).
GEOMETRY = {"v": 1.0, "i": 0.1}
PHOTOMETRY = {"v": 0.5, "i": 1.0}
# Bundled scikit-image photos that are not among the training photos (`SAMPLES`), for held-out sequences.
HELDOUT_PHOTOS = ("moon", "page", "clock", "coins", "hubble_deep_field", "immunohistochemistry", "retina", "cell")
# Stereo pairs with a disparity map (scikit-image's `stereo_<name>`): one real viewpoint sequence each.
STEREO_PHOTOS = ("motorcycle",)
# A stereo patch is kept where the left view's disparity over its region is a plane (an affine map
# from left to right) to within this root mean square (pixels, after resizing), with at most
# `STEREO_OCCLUDED` of the region unseen by the right view: a depth edge is not one patch frame.
STEREO_PLANE_RMS = 1.0
STEREO_OCCLUDED = 0.1


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What the synthetic dataset holds.

    Attributes:
        photos: bundled sample names, two sequences each.
        count: patches (tracks) per sequence.
        patch_size: side of the written patches in pixels (32 as N-HPatches, 65 as hpatches-release).
        region: side of the patch's region in the reference photo, in pixels.
        size: longer side the photos are resized to, in pixels.
        noise: standard deviation of the Gaussian part of the `_noise` twins (0: no twins).
        seed: seed of every random choice.
    """

    photos: tuple = SAMPLES
    count: int = 64
    patch_size: int = 32
    region: int = 32
    size: int = 384
    noise: float = 0.1
    seed: int = 0


def _photo(name, size):
    """A bundled photo as grey float in [0, 1], its longer side `size`: a training sample or a held-out one."""
    if name in HELDOUT_PHOTOS:
        import skimage.data

        from deeprestore.images import resize, to_float_rgb

        return resize(to_float_rgb(getattr(skimage.data, name)()), size).mean(axis=-1)
    return load_image(name, size).mean(axis=-1)


def _homography(rng, strength, center):
    """A random homography about `center` whose rotation, scale, shear and perspective grow with strength."""
    angle = np.deg2rad(rng.uniform(-1, 1) * 25.0 * strength)
    scale = np.exp(rng.uniform(-1, 1) * 0.35 * strength)
    shear = rng.uniform(-1, 1) * 0.25 * strength
    perspective = rng.uniform(-1, 1, 2) * 6e-4 * strength
    cos, sin = np.cos(angle), np.sin(angle)
    linear = scale * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[2, :2] = perspective
    to_origin = np.array([[1, 0, -center[0]], [0, 1, -center[1]], [0, 0, 1.0]])
    return np.linalg.inv(to_origin) @ matrix @ to_origin  # acts on (x, y, 1) column vectors


def _apply(matrix, points):
    """Maps `(n, 2)` (x, y) points through a homography."""
    mapped = np.c_[points, np.ones(len(points))] @ matrix.T
    return mapped[:, :2] / mapped[:, 2:]


def _jacobians(matrix, points):
    """The `(n, 2, 2)` Jacobians of a homography at `(n, 2)` points (central differences)."""
    step = 0.5
    columns = [(_apply(matrix, points + offset) - _apply(matrix, points - offset)) / (2 * step)
               for offset in (np.array([step, 0.0]), np.array([0.0, step]))]
    return np.stack(columns, axis=-1)


def _photometric(image, rng, strength, shape):
    """Brightness (gain), contrast, gamma and shading (a linear gradient and a soft light spot), growing
    with strength, then sensor noise."""
    gamma = np.exp(rng.uniform(-1, 1) * 0.5 * strength)
    gain = np.exp(rng.uniform(-1, 1) * 0.4 * strength)
    contrast = np.exp(rng.uniform(-1, 1) * 0.4 * strength)
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    direction = rng.uniform(-1, 1, 2) * 0.5 * strength
    gradient = 1.0 + direction[0] * (rows - 0.5) + direction[1] * (columns - 0.5)
    centre, radius = rng.uniform(0, 1, 2) * np.array(shape) / max(shape), rng.uniform(0.15, 0.4)
    spot = 1.0 + rng.uniform(-0.6, 0.6) * strength * np.exp(
        -((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / (2 * radius**2))
    changed = gain * gradient * spot * np.clip(image, 0, 1) ** gamma
    changed = changed.mean() + contrast * (changed - changed.mean())
    return np.clip(changed + rng.normal(0.0, SENSOR_NOISE, shape), 0.0, 1.0)


def _keypoints(image, count, margin, rng):
    """Up to `count` corner locations `(x, y)` at least `margin` from the border, strongest first."""
    response = skimage.feature.corner_harris(scipy.ndimage.gaussian_filter(image, 1.0), sigma=2)
    peaks = skimage.feature.corner_peaks(response, min_distance=6, threshold_rel=1e-3,
                                         exclude_border=int(margin))
    peaks = peaks[np.argsort(-response[peaks[:, 0], peaks[:, 1]], kind="stable")]
    if len(peaks) < 4 * count:  # flat photos: top up with random locations
        extra = rng.uniform(margin, np.array(image.shape) - margin, size=(4 * count, 2))
        peaks = np.concatenate([peaks, extra])
    return peaks[:, ::-1].astype(np.float64)  # (row, col) -> (x, y)


def _frames(rng, count, level):
    """Per-patch jitter transforms `(count, 2, 2)` and shifts `(count, 2)` for a level (identity for ref)."""
    if level is None:
        return np.tile(np.eye(2), (count, 1, 1)), np.zeros((count, 2))
    rotation, log_scale, shift = JITTER[level]
    angles = np.deg2rad(rng.normal(0, rotation, count))
    scales = np.exp(rng.normal(0, log_scale, (count, 2)))
    cos, sin = np.cos(angles), np.sin(angles)
    rotations = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    return rotations * scales[:, None, :], rng.normal(0, shift, (count, 2))


def _sample(image, centers, linear, spec):
    """Samples `(count, patch_size, patch_size)` patches.

    Pixel (u, v) of patch i is at centers[i] + linear[i] (u, v).
    """
    offsets = (np.arange(spec.patch_size) - (spec.patch_size - 1) / 2) * spec.region / spec.patch_size
    grid_x, grid_y = np.meshgrid(offsets, offsets)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()])  # (2, pixels) in (x, y)
    points = centers[:, :, None] + linear @ grid  # (count, 2, pixels)
    inside = ((points[:, 0] >= 0) & (points[:, 0] <= image.shape[1] - 1)
              & (points[:, 1] >= 0) & (points[:, 1] <= image.shape[0] - 1)).all(axis=1)
    values = scipy.ndimage.map_coordinates(image, [points[:, 1].ravel(), points[:, 0].ravel()],
                                           order=1, mode="nearest")
    return values.reshape(len(centers), spec.patch_size, spec.patch_size), inside


def _stereo(name, size):
    """The left and right views as grey floats in [0, 1], their longer side `size`, and the left view's
    disparity in pixels at that size (infinite where the right view does not see the point)."""
    import skimage.data

    from deeprestore.images import resize, to_float_rgb

    left, right, disparity = getattr(skimage.data, f"stereo_{name}")()
    scale = size / max(left.shape[:2])
    views = [resize(to_float_rgb(view), size).mean(axis=-1) for view in (left, right)]
    rows = np.minimum((np.arange(views[0].shape[0]) / scale).astype(int), disparity.shape[0] - 1)
    columns = np.minimum((np.arange(views[0].shape[1]) / scale).astype(int), disparity.shape[1] - 1)
    return views[0], views[1], disparity[np.ix_(rows, columns)].astype(np.float64) * scale  # nearest: inf stays


def _disparity_plane(disparity, point, half):
    """`(a, b, c)`: the plane `a + b u + c v` fitted to the disparity about `point` (u, v: pixels from
    it), or NaNs where the region leaves the image, is occluded or is not planar (see `STEREO_PLANE_RMS`)."""
    x, y = round(float(point[0])), round(float(point[1]))
    window = disparity[y - half:y + half + 1, x - half:x + half + 1]
    if window.shape != (2 * half + 1, 2 * half + 1) or np.isinf(window).mean() > STEREO_OCCLUDED:
        return np.full(3, np.nan)
    v, u = np.mgrid[-half:half + 1, -half:half + 1]
    seen = np.isfinite(window)
    design = np.c_[np.ones(seen.sum()), u[seen] + (x - point[0]), v[seen] + (y - point[1])]
    plane, *_ = np.linalg.lstsq(design, window[seen], rcond=None)
    rms = np.sqrt(np.mean((design @ plane - window[seen]) ** 2))
    return plane if rms <= STEREO_PLANE_RMS else np.full(3, np.nan)


def stereo_sequence(name, spec, rng):
    """The 16 stacks of a real viewpoint sequence from a stereo pair (see `STEREO`).

    The reference patches are at corners of the left view whose region's disparity is a plane (see
    `STEREO_PLANE_RMS`); image k is the right view sampled in the reference frame carried through that
    plane's affine map, with the level's jitter as in `synthesize_sequence`.
    """
    left, right, disparity = _stereo(name, spec.size)
    candidates = _keypoints(left, spec.count, spec.region, rng)
    planes = np.array([_disparity_plane(disparity, point, spec.region // 2) for point in candidates])
    kept = np.isfinite(planes[:, 0])
    candidates, planes = candidates[kept], planes[kept]
    moved = candidates - np.c_[planes[:, 0], np.zeros(len(candidates))]
    # x_right = x - d(x, y) with d = a + b u + c v about the corner: its Jacobian carries the patch frame.
    carried = np.tile(np.eye(2), (len(candidates), 1, 1))
    carried[:, 0, 0] -= planes[:, 1]
    carried[:, 0, 1] -= planes[:, 2]
    stacks, valid = {}, np.ones(len(candidates), bool)
    for image in IMAGES:
        jitter, shift = _frames(rng, len(candidates), None if image == "ref" else image[0])
        frames = jitter if image == "ref" else carried @ jitter
        centers = (candidates if image == "ref" else moved) + (frames @ shift[:, :, None])[:, :, 0] * spec.region
        stacks[image], inside = _sample(left if image == "ref" else right, centers, frames, spec)
        valid &= inside
    chosen = np.flatnonzero(valid)[:spec.count]
    return {image: stack[chosen] for image, stack in stacks.items()}


def synthesize_sequence(photo, kind, spec, rng):
    """The 16 clean stacks `{image: float (count, size, size)}` of one sequence (`kind` "v" or "i")."""
    reference = _photo(photo, spec.size)
    shape = reference.shape
    center = np.array([shape[1], shape[0]]) / 2.0
    geometry, photometry = GEOMETRY[kind], PHOTOMETRY[kind]
    homographies = [np.eye(3)] + [_homography(rng, geometry * k / 5, center) for k in range(1, 6)]
    warped = [reference] + [
        _photometric(skimage.transform.warp(reference, skimage.transform.ProjectiveTransform(matrix).inverse,
                                            order=1, mode="reflect"), rng, photometry * k / 5, shape)
        for k, matrix in enumerate(homographies[1:], start=1)]
    candidates = _keypoints(reference, spec.count, spec.region, rng)
    stacks, valid = {}, np.ones(len(candidates), bool)
    for image in IMAGES:
        level, k = (None, 0) if image == "ref" else (image[0], int(image[1]))
        jitter, shift = _frames(rng, len(candidates), level)
        frames = _jacobians(homographies[k], candidates) @ jitter  # reference frame through H_k, jittered
        centers = _apply(homographies[k], candidates) + (frames @ shift[:, :, None])[:, :, 0] * spec.region
        stacks[image], inside = _sample(warped[k], centers, frames, spec)
        valid &= inside
    chosen = np.flatnonzero(valid)[:spec.count]
    return {image: stack[chosen] for image, stack in stacks.items()}


# The held-out evaluation sets: other photos, another seed; evaluate them with `--split full`.
HELDOUT = SyntheticSpec(photos=HELDOUT_PHOTOS, seed=1)
STEREO = SyntheticSpec(photos=STEREO_PHOTOS, count=256, seed=2)


def synthesize(root, spec=SyntheticSpec(), heldout=None):
    """Writes the synthetic dataset to `root` (sequence folders, `splits.json`, `spec.json`) and returns it.

    An existing complete dataset written with the same spec(s) is reused as is.

    Args:
        root: the folder.
        spec: what the dataset holds (`SyntheticSpec`).
        heldout: another spec whose sequences are written too, each drawn as `synthesize(root, heldout)`
            alone draws it; the split `heldout` then trains on every sequence of `spec` and tests on these.

    Returns:
        `root` as a `pathlib.Path`.
    """
    root = pathlib.Path(root)
    specs = {"train": dataclasses.asdict(spec), "heldout": dataclasses.asdict(heldout)} if heldout else (
        dataclasses.asdict(spec))
    spec_text = json.dumps(specs, sort_keys=True)
    if (root / "spec.json").is_file() and (root / "spec.json").read_text() == spec_text:
        return root
    names = _write_sequences(root, spec)
    splits = synthetic_splits(spec.photos, spec.seed, names)
    if heldout is not None:
        splits["heldout"] = {"name": "heldout", "test": sorted(_write_sequences(root, heldout)), "train": sorted(names)}
    (root / "splits.json").write_text(json.dumps(splits, indent=1))
    (root / "spec.json").write_text(spec_text)  # written last: marks the dataset complete
    return root


def _write_sequences(root, spec):
    """Writes the sequences of `spec` (and their `_noise` twins), drawn from a generator of its seed;
    returns their names."""
    rng = np.random.default_rng(spec.seed)
    names = []
    for photo in spec.photos:
        for kind in ("v",) if photo in STEREO_PHOTOS else ("i", "v"):
            name = f"{kind}_{photo}"
            if photo in STEREO_PHOTOS:
                stacks = stereo_sequence(photo, spec, rng)
            else:
                stacks = synthesize_sequence(photo, kind, spec, rng)
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            for image, stack in stacks.items():
                imageio.imwrite(folder / f"{image}.png", to_uint8(stack.reshape(-1, spec.patch_size)))
                if spec.noise > 0:
                    noisy = stack + rng.normal(0.0, spec.noise, stack.shape)
                    flips = rng.uniform(size=stack.shape)
                    noisy = np.where(flips < 0.01, 0.0, np.where(flips > 0.99, 1.0, noisy))
                    imageio.imwrite(folder / f"{image}{NOISE_SUFFIX}.png",
                                    to_uint8(noisy.reshape(-1, spec.patch_size)))
            names.append(name)
    return names


def synthetic_splits(photos, seed, names=None):
    """Splits in the benchmark's format: `a`, `b`, `c` test on both sequences of half the photos
    (so no photo is in train and test), `illum` on the `i_` ones, `view` on the `v_` ones, `full` on all.

    Args:
        names: the sequences written (default: an `i_` and a `v_` one per photo).
    """
    everything = sorted(names or (f"{kind}_{photo}" for photo in photos for kind in ("i", "v")))
    splits = {}
    for offset, name in enumerate(("a", "b", "c")):
        order = np.random.default_rng(seed + offset).permutation(sorted(photos))
        test_photos = set(order[:max(1, len(photos) // 2)])
        test = [sequence for sequence in everything if sequence[2:] in test_photos]
        splits[name] = {"name": name, "test": test, "train": [s for s in everything if s not in test]}
    for name, prefix in (("illum", "i_"), ("view", "v_")):
        test = [sequence for sequence in everything if sequence.startswith(prefix)]
        splits[name] = {"name": name, "test": test, "train": [s for s in everything if s not in test]}
    splits["full"] = {"name": "full", "test": everything, "train": []}
    return splits
