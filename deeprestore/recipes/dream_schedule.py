"""The schedule of one dream: the octaves an image allows, its stages run over octaves and frames, on
pixels or a Fourier spectrum, with the regularisers as constraints on the device, and the norms of the
objective's layers it logs.
"""

import dataclasses
import math

import keras
import numpy as np

from deeprestore import images as image_io
from deeprestore import objectives, transforms
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import plot_curves
from deeprestore.optimise import Constraint, Engine, Plan, Progress, every, normalised_descent, optimise
from deeprestore.parametrisations import FourierImage, normalised_image_descent


def with_monitors(objective):
    """The objective plus, for each layer it reads without an `l2.<layer>` term, a weight-0
    `mean_square.<layer>` term: the logged mean squared response from which the layer's L2 norm is
    plotted (seed 003, figures 2 and 4). An `l2.<layer>` term already logs exactly that value."""
    names = {term.name for term in objective.terms}
    monitors = [
        dataclasses.replace(objectives.l2(layer).terms[0], name=f"mean_square.{layer}", weight=0.0)
        for layer in objective.layers if layer != "images" and f"l2.{layer}" not in names
    ]
    return objective + objectives.Objective(monitors) if monitors else objective


def octave_sizes(height, width, octaves, octave_scale):
    """Returns the `(height, width)` of each octave, smallest first, the last the full size."""
    return [
        (max(1, round(height / octave_scale**k)), max(1, round(width / octave_scale**k)))
        for k in reversed(range(octaves))
    ]


def start_image(source, start, rng):
    """The image the ascent starts from: the source itself, seeded uniform noise, or flat grey."""
    if start == "image":
        return source
    if start == "noise":
        return rng.uniform(0.0, 1.0, source.shape).astype(np.float32)
    return np.full_like(source, 0.5)


def usable_octaves(network, layers, sizes, tile=0):
    """Drops octaves too small for the objective's layers (each must keep at least one pixel).

    Raises:
        DeepRestoreError: No octave is large enough, or the tile is too small for the layers.
    """
    usable = []
    for size in sizes:
        try:
            shapes = network.output_shapes(*size, layers=layers)
        except DeepRestoreError:
            continue
        if all(dimension and dimension > 0 for shape in shapes.values() for dimension in shape[1:3]):
            usable.append(size)
    if not usable:
        network.output_shapes(*sizes[-1], layers=layers)  # the network's own reason, where it has one
        raise DeepRestoreError(
            f"The image is too small for layers {', '.join(layers)} of '{network.name}' at every octave; "
            "expected a larger --size or fewer --octaves."
        )
    if tile:
        try:
            network.output_shapes(min(tile, usable[-1][0]), min(tile, usable[-1][1]), layers=layers)
        except DeepRestoreError:
            raise DeepRestoreError(
                f"Tiles of {tile} px are too small for layers {', '.join(layers)} of '{network.name}'; expected "
                f"--tile of at least {max(network.spec.input_size)}."
            ) from None
    return usable


@dataclasses.dataclass(frozen=True)
class Resume:
    """Where a dream continues an interrupted attempt: at the octave and the stage (an index) it had
    reached in its frame, with the steps of that stage done and the variables (pixels or Fourier
    parameters) after them; `step` is that point's number in the dream's steps (the loss log's). A frame
    after the first starts from the one before, zoomed, as the attempt wrote it (`frames/`)."""

    octave: int
    stage: int
    done: int
    variables: object
    step: int
    frame: int = 1


def resume_point(context, stages, name, sizes, frames_folder):
    """The `Resume` of item `name`'s partial result where it lies inside a stage of an octave of this
    dream's frames, octaves `sizes` and stages (its recorded first step, frame, octave and length say
    which), and, in a frame after the first, the frame before it is in `frames_folder`; else None. A
    notice says which.
    """
    found = context.partial(name)
    if found is None:
        return None
    variables, record = found
    settings, first = context.settings, record.get("first_step")
    where = record.get("context", {})
    shapes = [(*size, 3) if settings.parametrisation != "fourier"
              else FourierImage((1, *size), decay_power=settings.decay_power).parameters.shape[1:] for size in sizes]
    start = 0
    for frame in range(1, settings.frames + 1):
        for octave, shape in enumerate(shapes, start=1):
            for index, stage in enumerate(stages):
                if (start == first and record["of"] - first == stage.steps and 0 < record["step"] - first < stage.steps
                        and where.get("octave") == octave and where.get("frame", 1) == frame
                        and variables.shape == shape
                        and (frame == 1 or (frames_folder / f"frame_{frame - 1:03d}.png").is_file())):
                    at = f"frame {frame} of {settings.frames}, " if settings.frames > 1 else ""
                    context.notify(f"{name}: continuing from the partial result of an interrupted attempt at "
                                   f"{at}octave {octave} of {len(sizes)}, step {record['step']} (stage {index + 1} of "
                                   f"{len(stages)}: {record['step'] - first} of {stage.steps} steps).")
                    return Resume(octave, index, record["step"] - first, variables.astype(np.float32), record["step"],
                                  frame)
                start += stage.steps
    context.notify(f"{name}: the partial result of an interrupted attempt is not within this dream's frames, octaves "
                   "and stages; dreaming it afresh.")
    return None


class Schedule:
    """Runs the stages over octaves and frames, keeping one engine per stage and a global step count."""

    def __init__(self, context, prepared, log, outputs, rng):
        self.settings = context.settings
        self.stages = prepared.stages
        self.targets = prepared.targets
        self.log = log
        self.run = outputs
        self.rng = rng
        self.show_progress = context.show_progress
        self.engines = [Engine.for_objective(with_monitors(stage.objective), prepared.network)
                        for stage in prepared.stages]
        self.step = 0
        self.steps_at = []  # (first step, last step, frame, octave size)

    def context(self, frame, octave, stage):
        context = {"octave": octave}
        if len(self.stages) > 1:
            context["cycle"] = stage.cycle
        if self.settings.frames > 1:
            context["frame"] = frame
        return context

    def regulariser(self):
        """`(images, number) -> images` on the device: the blur due at step `number`, then the scaling
        towards grey; None when neither applies."""
        settings = self.settings
        blur = (transforms.gaussian_blur(settings.blur_sigma)
                if settings.blur_every and settings.blur_sigma > 0 else None)
        scale = transforms.scale_towards(settings.scaling) if settings.scaling != 1.0 else None
        if blur is None and scale is None:
            return None

        def regularise(images, number):
            if blur is not None:
                images = keras.ops.cond(number % settings.blur_every == 0, lambda: blur(images), lambda: images)
            return scale(images) if scale is not None else images

        return regularise

    def constraint(self, parametrisation=None):
        """The regularisers and clamping after each step, on the device: on pixels, or through the
        parametrisation on the decoded images, re-encoded (only on steps a regulariser changes them)."""
        settings = self.settings
        regularise = self.regulariser()
        key = ("dream", settings.blur_every, settings.blur_sigma, settings.scaling, settings.clamp,
               getattr(parametrisation, "key", None))
        if parametrisation is None:
            def on_pixels(images, number):
                images = images if regularise is None else regularise(images, number)
                return keras.ops.clip(images, 0.0, 1.0) if settings.clamp else images

            return [Constraint(key, on_pixels)]
        if regularise is None:
            return []

        def on_parameters(parameters, number):
            def re_encoded():
                return parametrisation.encode(regularise(parametrisation.decode(parameters), number))

            if settings.scaling != 1.0:
                return re_encoded()
            return keras.ops.cond(number % settings.blur_every == 0, re_encoded, lambda: parameters)

        return [Constraint(key, on_parameters)]

    def callbacks(self, first_step, parametrisation=None):
        """What runs after each step: the constraints on the device, saving every `save_every` steps on the host."""
        settings = self.settings
        callbacks = self.constraint(parametrisation)
        if settings.save_every:
            def save(variables, step):
                images = variables if parametrisation is None else parametrisation.images(variables)
                image_io.save_image(self.run.images_dir / f"step_{first_step + step + 1:06d}.png", images[0])
                return variables

            callbacks.append(every(settings.save_every, save, offset=first_step))
        return callbacks

    def skip(self, frame, octave, size, stages):
        """Counts the first `stages` stages of an octave as done (by an interrupted attempt): their steps
        number on, and the norms plot reads their rows of the loss log."""
        for stage in self.stages[:stages]:
            self.steps_at.append((self.step + 1, self.step + stage.steps, frame, octave, tuple(size)))
            self.step += stage.steps

    def octave(self, images, frame, octave, label, resume=None):
        """Runs every stage once on a batch at one octave's size, on its pixels or its Fourier spectrum;
        with a `Resume`, from its stage and variables on (the steps are numbered, and so drawn, as in an
        uninterrupted dream)."""
        settings = self.settings
        parametrisation = None
        variables = images
        if settings.parametrisation == "fourier":
            parametrisation = FourierImage(images.shape[:3], decay_power=settings.decay_power)
            variables = parametrisation.parameters_of(images)
        first, done = 0, 0
        if resume is not None:
            self.skip(frame, octave, images.shape[1:3], resume.stage)
            first, done, variables = resume.stage, resume.done, resume.variables[None]
        tiling = transforms.Tiling(settings.tile, settings.tile_mode, settings.tile_overlap) if settings.tile else None
        for stage, engine in list(zip(self.stages, self.engines))[first:]:
            rule = (normalised_descent(stage.step_size) if parametrisation is None
                    else normalised_image_descent(stage.step_size, parametrisation))
            targets = {name: value for name, value in self.targets.items() if name in stage.objective.names}
            progress = Progress(
                description=(f"{label} {images.shape[1]}x{images.shape[2]}"
                             + (f" cycle {stage.cycle}" if stage.cycle > 1 else "")),
                show=self.show_progress, log=self.log, first_step=self.step + done,
                context=self.context(frame, octave, stage),
            )
            variables, _ = optimise(
                engine, variables, stage.steps - done, rule,
                Plan(parametrisation, tiling=tiling, jitter=settings.jitter, seed=self.rng),
                callbacks=[*self.callbacks(self.step + done, parametrisation), progress], targets=targets,
            )
            self.steps_at.append((self.step + 1, self.step + stage.steps, frame, octave, images.shape[1:3]))
            self.step += stage.steps
            done = 0
        return variables if parametrisation is None else parametrisation.images(variables)

    def frame(self, image, frame, sizes, resume=None):
        """Dreams one image over the octaves with detail re-injection; returns the result. With a `Resume`,
        the octaves before its own count as done and its own continues from its variables (the detail to
        re-inject is what they reach over the octave's base)."""
        detail = np.zeros_like(image)
        result = image
        prefix = f"frame_{frame:03d}_" if self.settings.frames > 1 else ""
        for octave, size in enumerate(sizes, start=1):
            base = image_io.resize(image, size)
            label = (f"frame {frame} " if self.settings.frames > 1 else "") + f"octave {octave}/{len(sizes)}"
            if resume is not None and octave < resume.octave:
                self.skip(frame, octave, size, len(self.stages))
                continue
            if resume is not None and octave == resume.octave:
                result = self.octave(base[None], frame, octave, label, resume)[0]
            else:
                detail = image_io.resize(detail, size)
                result = self.octave((base + detail)[None], frame, octave, label)[0]
            detail = result - base
            image_io.save_image(self.run.images_dir / f"{prefix}octave_{octave}.png", result)
        return np.clip(result, 0.0, 1.0)


def write_norms(run, log, network, layers, steps_at):
    """Writes `norms.csv` (step, frame, octave, layer, L2 norm of the layer's response) and `norms.png`."""
    counts = {}
    rows = []
    for layer in layers:
        # The mean squared response: the `l2.` term where the objective has one, else its monitor.
        values = {**dict(log.values(f"mean_square.{layer}")), **dict(log.values(f"l2.{layer}"))}
        for first, last, frame, octave, size in steps_at:
            if size not in counts:
                counts[size] = {name: math.prod(shape[1:])
                                for name, shape in network.output_shapes(*size, layers=layers).items()}
            for step in range(first, last + 1):
                if step in values:
                    rows.append((step, frame, octave, layer, math.sqrt(max(values[step], 0.0) * counts[size][layer])))
    rows.sort(key=lambda row: (row[3], row[0]))
    lines = ["step,frame,octave,layer,norm"] + [f"{step},{frame},{octave},{layer},{norm:.6g}"
                                                for step, frame, octave, layer, norm in rows]
    (run.path / "norms.csv").write_text("\n".join(lines) + "\n")
    curves = {}
    for step, _, _, layer, norm in rows:
        curves.setdefault(layer, ([], []))
        curves[layer][0].append(step)
        curves[layer][1].append(norm)
    plot_curves(run.path / "norms.png", curves, "L2 norm of each objective layer's response", "step", "L2 norm")
