"""Descriptor data, network, losses, sampling and the `describe` command."""

import json
import pathlib
import types

import imageio.v3 as imageio
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.descriptors import hpatches, model, synthetic
from deeprestore.errors import DeepRestoreError
from deeprestore.recipes import describe, describe_data
from deeprestore.restoration import models

SMALL = synthetic.SyntheticSpec(photos=("camera", "coffee"), count=12, size=160, seed=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthetic.synthesize(tmp_path_factory.mktemp("data") / "synthetic", SMALL)


def test_descriptor_has_seed_004_parameter_counts():
    descriptor = model.descriptor_network()
    trainable = sum(int(np.prod(weight.shape)) for weight in descriptor.trainable_weights)
    assert descriptor.count_params() == 1_336_928 and trainable == 1_336_032
    assert descriptor.output_shape == (None, 128)


def test_standardised_inputs_hide_brightness_and_contrast():
    descriptor = model.descriptor_network(seed=1)
    patches = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32) * 0.5
    np.testing.assert_allclose(model.describe_patches(descriptor, 0.3 + 1.7 * patches),
                               model.describe_patches(descriptor, patches), rtol=1e-3, atol=1e-3)
    raw = model.descriptor_network(seed=1, standardise=False)
    assert raw.count_params() == descriptor.count_params()
    assert not np.allclose(model.describe_patches(raw, 0.3 + 1.7 * patches), model.describe_patches(raw, patches),
                           atol=1e-3)


def test_a_saved_standardising_descriptor_loads_and_gives_the_same_outputs(tmp_path):
    descriptor = model.descriptor_network(seed=2)
    descriptor.save(tmp_path / "descriptor.keras")
    loaded = keras.saving.load_model(tmp_path / "descriptor.keras", compile=False)
    patches = np.random.default_rng(1).random((3, 32, 32))
    np.testing.assert_allclose(model.describe_patches(loaded, patches), model.describe_patches(descriptor, patches),
                               rtol=1e-5, atol=1e-6)


def test_heldout_sequences_use_photos_training_never_sees(tmp_path):
    assert not set(synthetic.HELDOUT_PHOTOS) & set(synthetic.SyntheticSpec().photos)
    spec = synthetic.SyntheticSpec(photos=("coins",), count=8, size=128, seed=1)
    sequence = hpatches.load_dataset(synthetic.synthesize(tmp_path / "heldout", spec))["i_coins"]
    ref, lit = sequence.images["ref"].astype(float), sequence.images["t5"].astype(float)
    assert sequence.count == 8 and abs(lit.mean() - ref.mean()) + abs(lit.std() - ref.std()) > 1.0


def test_the_split_heldout_trains_on_every_training_sequence_and_tests_on_the_heldout_ones_drawn_as_alone(tmp_path):
    training = synthetic.SyntheticSpec(photos=("camera",), count=8, size=128, seed=0)
    heldout = synthetic.SyntheticSpec(photos=("coins",), count=8, size=128, seed=1)
    root = synthetic.synthesize(tmp_path / "both", training, heldout)
    split = hpatches.resolve_split(root, "heldout")
    assert list(split.train) == ["i_camera", "v_camera"] and list(split.test) == ["i_coins", "v_coins"]
    assert list(hpatches.resolve_split(root, "full").test) == ["i_camera", "v_camera"]  # the training photos' splits
    alone = hpatches.load_dataset(synthetic.synthesize(tmp_path / "alone", heldout))["v_coins"]
    together = hpatches.load_dataset(root)["v_coins"]
    assert all(np.array_equal(alone.images[image], together.images[image]) for image in hpatches.IMAGES)
    assert synthetic.synthesize(root, training, heldout) == root  # reused, not drawn again
    defaults = {"data": None, "split": None}
    assert describe_data.split_name(types.SimpleNamespace(**defaults)) == "heldout"
    assert describe_data.split_name(types.SimpleNamespace(**{**defaults, "data": "hpatches"})) == "a"
    assert describe_data.split_name(types.SimpleNamespace(**{**defaults, "split": "view"})) == "view"


def test_l2_normalised_descriptors_have_unit_norm():
    descriptor = model.descriptor_network(l2_normalise=True)
    outputs = model.describe_patches(descriptor, np.random.default_rng(0).random((4, 32, 32)))
    np.testing.assert_allclose(np.linalg.norm(outputs, axis=1), 1.0, rtol=1e-5)


def test_triplet_loss_is_the_hinge_on_mean_squared_distances():
    anchor, positive, negative = np.zeros(4), np.full(4, 1.0), np.full(4, 0.5)
    loss = model.TripletLoss(margin=1.0)(np.zeros(1), np.stack([anchor, positive, negative])[None].astype("float32"))
    assert float(loss) == pytest.approx(max(0.0, 1.0 - 0.25 + 1.0))


def test_hardest_loss_uses_the_closest_non_matching_descriptor():
    anchors = np.array([[0.0, 0.0], [10.0, 0.0]])
    positives = np.array([[1.0, 0.0], [10.0, 1.0]])
    stacked = np.stack([anchors, positives, positives], axis=1).astype("float32")
    loss = float(model.HardestTripletLoss(margin=1.0)(np.zeros(2), stacked))
    # pair 0: d(a0,p0)=1, hardest negative min(d(a0,p1), d(a1,p0)) = 9; pair 1 likewise: both below the margin
    assert loss == pytest.approx(0.0, abs=1e-3)


def test_triplets_pair_two_members_of_a_track_with_another_track():
    tracks = np.arange(40).reshape(10, 4)  # patch index -> track = index // 4
    sampler = model.TripletSampler(tracks, seed=3)
    triplets = sampler.sample(500, epoch=0)
    track = triplets // 4
    assert (track[:, 0] == track[:, 1]).all() and (triplets[:, 0] != triplets[:, 1]).all()
    assert (track[:, 2] != track[:, 0]).all()
    np.testing.assert_array_equal(triplets, model.TripletSampler(tracks, seed=3).sample(500, epoch=0))
    assert not np.array_equal(triplets, sampler.sample(500, epoch=1))  # a fresh set each epoch
    batch = sampler.sample(20, epoch=0, distinct_tracks=True, batch_size=10)
    assert len(set(batch[:10, 0] // 4)) == 10


def test_level_positives_pair_two_members_of_one_set_and_every_set_is_drawn():
    tracks = np.arange(30 * 16).reshape(30, 16)
    sets = describe.member_sets("level")
    assert sets == [[0, 1, 2, 3, 4, 5], [0, 6, 7, 8, 9, 10], [0, 11, 12, 13, 14, 15]]
    triplets = model.TripletSampler(tracks, seed=2, member_sets=sets).sample(3000)
    first, second = triplets[:, 0] % 16, triplets[:, 1] % 16
    assert (triplets[:, 0] // 16 == triplets[:, 1] // 16).all() and (first != second).all()
    level = np.where(first == 0, second, first)  # the member that is not the reference names the set
    pairs_of_set = [np.isin(first[(level - 1) // 5 == index], members).all()
                    and np.isin(second[(level - 1) // 5 == index], members).all() for index, members in enumerate(sets)]
    assert all(pairs_of_set) and np.bincount((level - 1) // 5).min() > 800  # about 1000 each
    assert describe.member_sets("any") is None
    with pytest.raises(DeepRestoreError, match="at least 2 columns"):
        model.TripletSampler(tracks, member_sets=[[0, 16]])


def test_batches_of_few_sequences_draw_anchors_and_negatives_from_those_sequences_only():
    tracks = np.arange(480).reshape(120, 4)  # 12 sequences of 10 tracks
    groups = np.repeat(np.arange(12), 10)
    sampler = model.TripletSampler(tracks, seed=1, groups=groups)
    triplets = sampler.sample(96, distinct_tracks=True, batch_size=16, group_count=2)
    track = triplets // 4
    assert (track[:, 0] == track[:, 1]).all() and (track[:, 2] != track[:, 0]).all()
    for batch in track.reshape(6, 16, 3):
        sequences = set(groups[batch[:, 0]])
        assert len(sequences) == 2 and set(groups[batch[:, 2]]) <= sequences and len(set(batch[:, 0])) == 16
    crowded = sampler.sample(32, distinct_tracks=True, batch_size=32, group_count=2)  # 2 sequences hold 20 tracks
    assert len(set(crowded[:, 0] // 4)) == 32 and len(set(groups[crowded[:, 0] // 4])) == 4
    np.testing.assert_array_equal(triplets, model.TripletSampler(tracks, seed=1, groups=groups).sample(
        96, distinct_tracks=True, batch_size=16, group_count=2))


def test_augmented_triplets_are_one_of_the_eight_symmetries_of_the_square_the_same_for_all_three():
    bank = np.random.default_rng(0).integers(0, 256, (12, 32, 32), dtype=np.uint8)
    indices = np.arange(12).reshape(4, 3)
    plain = describe.TripletBatches(bank, indices, 4)[0][0][..., 0]
    augmented = describe.TripletBatches(bank, indices, 4, augment=(5, 0))[0][0][..., 0]
    codes = []
    for before, after in zip(plain, augmented):
        found = [code for code in range(8) if np.array_equal(
            np.rot90(before[..., ::-1] if code & 4 else before, k=code & 3, axes=(1, 2)), after)]
        assert len(found) == 1
        codes.append(found[0])
    assert len(set(codes)) > 1  # four triplets drew different symmetries (seeded)
    np.testing.assert_array_equal(augmented, describe.TripletBatches(bank, indices, 4, augment=(5, 0))[0][0][..., 0])


# the default loss in the default suite; seed 004's triplet loss against numpy in the test above
@pytest.mark.parametrize("loss", [pytest.param("triplet", marks=pytest.mark.slow), "hardest"])
def test_a_few_training_steps_lower_the_triplet_loss(loss):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    prototypes = rng.random((8, 32, 32)).astype("float32")
    patches = np.concatenate([prototypes + 0.05 * rng.normal(size=prototypes.shape) for _ in range(4)])[..., None]
    tracks = np.arange(32).reshape(4, 8).T
    indices = model.TripletSampler(tracks, seed=0).sample(24, distinct_tracks=loss == "hardest", batch_size=8)
    indices = indices[:, :model.MEMBERS[loss]]  # the hardest-in-batch loss mines its negatives: pairs
    trainer = model.triplet_model(model.descriptor_network(l2_normalise=loss == "hardest", dropout=0.0),
                                  model.MEMBERS[loss])
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.create_loss(loss))
    history = trainer.fit(patches[indices], np.zeros(24), batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("inputs", ["clean", "noisy"])
def test_the_8_bit_patch_bank_gives_batches_of_the_same_floats_as_the_patches(dataset, inputs):
    names = ["i_camera", "v_coffee"]
    sequences = hpatches.load_dataset(dataset, names, noisy=inputs == "noisy")
    source = describe.PatchSource(inputs)
    bank, tracks = describe.patch_bank(sequences, names, source)
    assert bank.dtype == np.uint8 and bank.shape == (2 * 16 * 12, 32, 32) and tracks.shape == (24, 16)
    floats = np.concatenate([source.patches(sequences[name], image) for name in names for image in hpatches.IMAGES])
    indices = model.TripletSampler(tracks, seed=0).sample(5)
    batches = describe.TripletBatches(bank, indices, batch_size=2)
    assert len(batches) == 3 and batches[2][0].shape == (1, 3, 32, 32, 1) and batches[2][0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([batches[number][0] for number in range(3)]),
                                  floats[indices][..., None])


def test_synthetic_dataset_has_real_correspondences(dataset):
    sequences = hpatches.load_dataset(dataset, noisy=True)
    assert set(sequences) == {"i_camera", "i_coffee", "v_camera", "v_coffee"}
    sequence = sequences["v_camera"]
    assert sequence.patch_size == 32 and sequence.count == 12 and sequence.noisy is not None
    ref, easy, tough = (sequence.images[image].astype(float) for image in ("ref", "e1", "t5"))
    same_row = np.abs(easy - ref).mean()
    assert same_row < np.abs(easy[1:] - ref[:-1]).mean() and same_row < np.abs(tough - ref).mean()
    split = hpatches.resolve_split(dataset, "a")
    assert set(split.test).isdisjoint(split.train) and len(split.test) == 2


def test_synthetic_dataset_is_deterministic(dataset, tmp_path):
    again = synthetic.synthesize(tmp_path / "again", SMALL)
    for image in ("ref", "h3", "t5_noise"):
        np.testing.assert_array_equal(imageio.imread(again / "i_coffee" / f"{image}.png"),
                                      imageio.imread(dataset / "i_coffee" / f"{image}.png"))


def test_official_split_a_tests_on_40_sequences_and_trains_on_76():
    split = hpatches.official_splits()["a"]
    assert len(split.test) == 40 and len(split.train) == 76 and "v_yuri" in split.test


def _write_sequence(folder, count=2, size=65, height=None, skip=()):
    folder.mkdir(parents=True)
    for image in hpatches.IMAGES:
        if image not in skip:
            imageio.imwrite(folder / f"{image}.png", np.zeros((height or count * size, size), np.uint8))


def test_hpatches_release_stacks_are_read_as_65_pixel_patches(tmp_path):
    _write_sequence(tmp_path / "i_x", count=3)
    sequence = hpatches.load_dataset(tmp_path)["i_x"]
    assert sequence.images["t5"].shape == (3, 65, 65)
    assert hpatches.resize_patches(sequence.images["ref"], 32).shape == (3, 32, 32)


@pytest.mark.parametrize("skip, height, message", [
    (("e3",), None, "e3.png' is missing"),
    ((), 100, "height a multiple of 65"),
])
def test_malformed_datasets_raise_clear_errors(tmp_path, skip, height, message):
    _write_sequence(tmp_path / "v_bad", skip=skip, height=height)
    with pytest.raises(DeepRestoreError, match=message):
        hpatches.load_dataset(tmp_path)


def test_a_split_naming_missing_sequences_is_an_error(tmp_path):
    _write_sequence(tmp_path / "v_only")
    with pytest.raises(DeepRestoreError, match="missing from"):
        hpatches.resolve_split(tmp_path, "a")


def _invoke(tmp_path, *arguments):
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", "describe", *arguments],
                                catch_exceptions=False)
    return result, pathlib.Path(result.output.strip().splitlines()[-1]) if result.output.strip() else None


TRAIN = ("train", "--steps", "2", "--triplets", "32", "--batch-size", "16", "--pairs", "200", "--queries", "10")


def test_describe_train_evaluate_and_resume_write_complete_runs(dataset, tmp_path):
    result, run = _invoke(tmp_path, *TRAIN, "--data", str(dataset), "--inputs", "noisy", "--batch-sequences", "1",
                          "--positives", "level", "--augment")
    assert result.exit_code == 0, result.output
    assert run.parent == tmp_path / "runs" / "describe-train" and (run / "status").read_text().strip() == "complete"
    assert {"results.json", "results.txt", "results.png", "descriptor.keras", "config.json", "argv.txt"} <= \
        {path.name for path in run.iterdir()}
    assert (run / "images" / "map.png").exists() and (run / "checkpoints" / "step-00000002.weights.h5").exists()
    assert len(list((run / "tasks").glob("*.csv"))) == 5
    results = json.loads((run / "results.json").read_text())["descriptor"]
    assert set(results["summary"]) == {"verification", "matching", "retrieval"}
    assert set(results["retrieval"]["t"]) == {"100", "500", "1000", "5000", "10000", "15000", "20000"}

    result, resumed = _invoke(tmp_path, "train", "--resume", str(run), "--epochs", "2")  # the old spelling
    assert result.exit_code == 0, result.output
    assert resumed == run and (run / "checkpoints" / "step-00000004.weights.h5").exists()
    assert (run / "losses" / "map.matching.csv").read_text().count("\n") == 3  # header + epochs 1 and 2

    result, evaluated = _invoke(tmp_path, "evaluate", "--data", str(dataset), "--inputs", "noisy", "--model", str(run),
                                "--export", "--tasks", str(run / "tasks"))
    assert result.exit_code == 0, result.output
    exported = evaluated / "descriptors" / "descriptor"
    assert (exported / "v_coffee" / "t5.csv").exists()
    result, compared = _invoke(tmp_path, "evaluate", "--data", str(dataset), "--tasks", str(run / "tasks"),
                               "--descriptors", str(exported))
    assert result.exit_code == 0, result.output
    assert set(json.loads((compared / "results.json").read_text())) == {"descriptor"}


def test_describe_errors_are_one_line(dataset, tmp_path):
    result, _ = _invoke(tmp_path, "evaluate", "--data", str(dataset))
    assert result.exit_code == 1 and "Nothing to evaluate" in result.output and "Traceback" not in result.output
    result, _ = _invoke(tmp_path, *TRAIN, "--data", str(dataset), "--inputs", "denoised")
    assert result.exit_code == 2 and "--denoiser" in result.output


def test_a_fully_convolutional_denoiser_goes_in_front_of_the_descriptor(dataset, tmp_path):
    # `denoise train` saves (None, None, None, 1) models; the patches are 32x32.
    unet = models.unet(channels=1)
    unet.save(tmp_path / "unet.keras")
    source = describe.PatchSource("denoised", tmp_path / "unet.keras")
    name = hpatches.sequence_names(dataset)[0]
    sequence = hpatches.load_dataset(dataset, [name], noisy=True)[name]
    noisy = hpatches.resize_patches(sequence.noisy["e1"], model.PATCH_SIZE)
    expected = np.clip(np.asarray(unet.predict(noisy[..., None], verbose=0))[..., 0], 0.0, 1.0)
    np.testing.assert_allclose(source.patches(sequence, "e1"), expected, atol=1e-6)


def test_a_denoiser_of_colour_images_is_refused_in_one_line(dataset, tmp_path):
    models.unet(channels=3).save(tmp_path / "colour.keras")
    result, _ = _invoke(tmp_path, *TRAIN, "--data", str(dataset), "--inputs", "denoised",
                        "--denoiser", str(tmp_path / "colour.keras"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "colour.keras" in result.output and "expected a model of (N, 32, 32, 1) gray patches" in result.output


@pytest.mark.parametrize("heldout", [False, True], ids=["training-photos", "heldout-photos"])
def test_describe_synth_writes_a_dataset_of_the_photos_it_names(tmp_path, heldout):
    result, folder = _invoke(tmp_path, "synth", "--out", str(tmp_path / "data"), "--patches", "8",
                             *(["--heldout"] if heldout else []))
    assert result.exit_code == 0, result.output
    photos = synthetic.HELDOUT_PHOTOS if heldout else synthetic.SyntheticSpec().photos
    names = hpatches.sequence_names(folder)
    assert {name.split("_", 1)[1] for name in names} == set(photos) and len(names) == 2 * len(photos)
    assert hpatches.load_dataset(folder, names[:1])[names[0]].count == 8


def _correlation(first, second):
    first, second = (np.asarray(patches, float).reshape(len(patches), -1) for patches in (first, second))
    first, second = first - first.mean(1, keepdims=True), second - second.mean(1, keepdims=True)
    return (first * second).sum(1) / np.sqrt((first**2).sum(1) * (second**2).sum(1) + 1e-9)


def test_describe_synth_stereo_writes_real_correspondences_of_the_motorcycle_pair(tmp_path):
    result, folder = _invoke(tmp_path, "synth", "--out", str(tmp_path / "stereo"), "--patches", "16", "--stereo")
    assert result.exit_code == 0, result.output
    assert hpatches.sequence_names(folder) == ["v_motorcycle"]
    sequence = hpatches.load_dataset(folder, noisy=True)["v_motorcycle"]
    assert sequence.count == 16 and sequence.noisy is not None  # with _noise twins, as the other sets
    matched = _correlation(sequence.images["ref"], sequence.images["e1"])
    shuffled = _correlation(sequence.images["ref"], np.roll(sequence.images["e1"], 1, axis=0))
    assert np.median(matched) > 0.7 and np.median(shuffled) < 0.3  # the right view at the disparity is the patch
    result, _ = _invoke(tmp_path, "synth", "--out", str(tmp_path / "both"), "--stereo", "--heldout")
    assert result.exit_code == 2 and "--heldout and --stereo" in result.output


def test_a_stereo_patch_is_kept_only_where_the_disparity_is_a_plane():
    rows, columns = np.mgrid[0:64, 0:64].astype(float)
    plane = 20.0 + 0.1 * (columns - 30) - 0.05 * (rows - 31)
    np.testing.assert_allclose(synthetic._disparity_plane(plane, (30.0, 31.0), 8), [20.0, 0.1, -0.05], atol=1e-9)
    edge = np.where(columns < 30, 10.0, 20.0)  # a depth edge through the region
    assert np.isnan(synthetic._disparity_plane(edge, (30.0, 31.0), 8)).all()
    occluded = plane.copy()
    occluded[25:37, 24:36] = np.inf  # half the region unseen by the right view
    assert np.isnan(synthetic._disparity_plane(occluded, (30.0, 31.0), 8)).all()
    assert np.isnan(synthetic._disparity_plane(plane, (3.0, 31.0), 8)).all()  # the region leaves the image


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_step_size_decays_to_zero_over_the_steps_or_stays(schedule):
    settings = types.SimpleNamespace(learning_rate=None, optimiser="adam", schedule=schedule, steps=100)
    optimiser = describe._optimizer(settings)
    first = float(optimiser.learning_rate)
    optimiser.iterations.assign(100)
    last = float(optimiser.learning_rate)
    assert first == pytest.approx(1e-3) and last == (pytest.approx(0.0, abs=1e-12) if schedule == "cosine" else first)
