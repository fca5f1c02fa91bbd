"""Gather what an evaluation compares: real training, validation and test pairs, the synthetic
pairs, and optionally the single-GAN baseline's images, all at one size.

Synthetic data are judged at the size they were generated (resampling would blur exactly the
thin vessels under test), so the synthetic set fixes the evaluation size and the real sets,
which come in every size, are fitted to it by the training loader. A synthetic folder with
mixed sizes is refused rather than silently resampled.

The synthetic set is a folder, the dual GAN's samples, or one class of a conditional StyleGAN2
(`--cstylegan2 RUN --label K`); the real sets are then that class's real data. For a dual GAN
the oracle set is stage II applied to the real training masks: real geometry, generated
appearance, which judges stage II apart from stage I.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from synthmed.errors import CheckpointError, DataError, UserInputError
from synthmed.latents import latents
from synthmed.training.checkpoint import load_generator, read_generator_info
from synthmed.training.data.dataset import PairedData, load_paired_data
from synthmed.training.data.layouts import find_pairs, resolve_root
from synthmed.training.pixels import mask_to_uint8, tanh_to_uint8
from synthmed.training.sample import (
    DEMO_STAGE1,
    DEMO_STAGE2,
    ConditionalSampler,
    TwoStagePipeline,
    render_masks,
)

# Labels of the compared sets, as the report and metrics.json name them.
REAL_TRAIN, HELD_OUT = "real (train)", "real (held-out)"
DUAL, SINGLE, ORACLE = "dual GAN", "single GAN", "stage II on real masks"
FOLDER = "synthetic folder"


@dataclass(frozen=True)
class ConditionalClass:
    """Which class of which conditional StyleGAN2 run made the synthetic set, and how."""

    run: Path
    index: int
    name: str
    truncation: float

    @property
    def set_label(self) -> str:
        """The synthetic set's name in tables and metrics.json."""
        return f"cStyleGAN2 ({self.name})"

    def as_dict(self) -> dict[str, object]:
        """For metrics.json."""
        return {
            "run": str(self.run),
            "class": self.name,
            "class_index": self.index,
            "truncation": self.truncation,
        }


@dataclass
class EvaluationData:
    """Everything compared, as uint8 tensors [N,3,S,S] / [N,1,S,S] at `size`."""

    size: int
    real_train: PairedData
    validation: PairedData
    test: PairedData
    synthetic: PairedData
    synthetic_source: str
    single: torch.Tensor | None = None
    single_source: str | None = None
    conditional: ConditionalClass | None = None
    oracle: PairedData | None = None
    oracle_note: str = ""  # what made the oracle set, or why there is none
    from_folder: bool = False  # the synthetic set was read from --synthetic, not sampled

    @property
    def synthetic_label(self) -> str:
        """The synthetic set's name: a folder, the conditional model's class, or the dual GAN."""
        if self.from_folder:
            return FOLDER
        return self.conditional.set_label if self.conditional is not None else DUAL


def subset(data: PairedData, index: list[int] | np.ndarray) -> PairedData:
    """The examples of `data` at `index`, in that order."""
    index = [int(i) for i in index]
    return PairedData(
        [data.names[i] for i in index],
        data.images[index],
        data.masks[index],
        data.fov[index],
        data.fingerprint,
    )


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from e


def synthetic_folder_size(folder: Path) -> int:
    """The one square size of every image and mask in a synthetic folder, or a one-line error."""
    root = resolve_root(folder)
    images = root / "images"
    if not images.is_dir() or not any(images.iterdir()):
        raise DataError(f"{root}: empty synthetic folder (no samples in {images})")
    first: tuple[Path, tuple[int, int]] | None = None
    for pair in find_pairs(root):
        for path in (pair.image, pair.mask):
            size = _image_size(path)
            if first is None:
                first = (path, size)
            elif size != first[1]:
                raise DataError(
                    f"{path}: size {size[0]}x{size[1]} differs from {first[0].name} "
                    f"({first[1][0]}x{first[1][1]}); a synthetic set has one image size"
                )
    assert first is not None
    width, height = first[1]
    if width != height:
        raise DataError(f"{first[0]}: synthetic images must be square, got {width}x{height}")
    return width


def _checked_size(requested: int | None, native: int, what: str) -> int:
    if requested is not None and requested != native:
        raise UserInputError(
            f"--size {requested} differs from {what} ({native}x{native}); synthetic data are "
            "evaluated at the size they were generated"
        )
    return native


def _from_arrays(images: np.ndarray, masks: np.ndarray, source: str) -> PairedData:
    """uint8 images [N,H,W,3] and masks [N,H,W] in {0,255} -> PairedData (fov: everything)."""
    images_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    masks_t = torch.from_numpy(masks >= 128).to(torch.uint8)[:, None]
    names = [f"{i:06d}" for i in range(len(images))]
    return PairedData(names, images_t, masks_t, torch.ones_like(masks_t), source)


def _sample_in_batches(
    sample: Callable[[range], tuple[np.ndarray, np.ndarray]], count: int, progress: bool
) -> PairedData:
    """Samples 0..count-1 in batches of 64. Each sample's latent depends on its index alone;
    PyTorch may round a few pixels differently in another batch (docs/stylegan2.md,
    "Reproducibility")."""
    images, masks = [], []
    with tqdm(total=count, desc="synthesize", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, count, 64):
            batch = sample(range(start, min(start + 64, count)))
            images.append(batch[0])
            masks.append(batch[1])
            bar.update(len(batch[0]))
    return _from_arrays(np.concatenate(images), np.concatenate(masks), "in-process")


def sample_two_stage(
    pipeline: TwoStagePipeline, count: int, seed: int, *, progress: bool = True
) -> PairedData:
    """Synthesize `count` pairs in-process: the same samples `synthmed generate` would write."""
    return _sample_in_batches(lambda indices: pipeline.sample(seed, indices), count, progress)


def stage2_on_masks(
    stage2: torch.nn.Module, real: PairedData, seed: int, *, progress: bool = True
) -> PairedData:
    """The oracle set: stage II's image for every real mask (mask k with the texture noise of
    sample k of `seed`), paired with that mask.

    Its masks are real, so whatever separates it from the real pairs is stage II's doing;
    whatever separates the dual GAN's samples from it is stage I's.
    """
    images = []
    bar = tqdm(total=len(real), desc=ORACLE, unit="img", disable=not progress, leave=False)
    with bar:
        for start in range(0, len(real), 64):
            masks = mask_to_uint8(real.masks[start : start + 64].float()).numpy()
            images.append(torch.from_numpy(render_masks(stage2, masks, seed=seed, start=start)))
            bar.update(len(masks))
    generated = torch.cat(images).permute(0, 3, 1, 2).contiguous()
    return PairedData(real.names, generated, real.masks, real.fov, "in-process")


def sample_conditional(
    sampler: ConditionalSampler,
    chosen: ConditionalClass,
    count: int,
    seed: int,
    *,
    progress: bool = True,
) -> PairedData:
    """`count` pairs of one class of a conditional StyleGAN2, sampled in-process."""
    return _sample_in_batches(
        lambda indices: sampler.sample(seed, indices, chosen.index, chosen.truncation),
        count,
        progress,
    )


def conditional_class(
    sampler: ConditionalSampler, label: str | int | None, truncation: float | None
) -> ConditionalClass:
    """The class `label` (index or name) of a loaded run, or a one-line error naming them."""
    if label is None:
        known = ", ".join(f"{k} = {name}" for k, name in enumerate(sampler.classes))
        raise UserInputError(
            f"--cstylegan2 needs --label K, the class to evaluate (classes: {known})"
        )
    index = sampler.label(label)
    psi = 1.0 if truncation is None else float(truncation)
    return ConditionalClass(sampler.run, index, sampler.classes[index], psi)


@torch.no_grad()
def sample_single(run: Path, count: int, seed: int, size: int) -> torch.Tensor:
    """Images uint8 [N,3,S,S] from a single-GAN baseline run, which must make `size` images."""
    native = read_generator_info(run, "single").image_size
    if native != size:
        raise CheckpointError(
            f"{run}: the single-GAN baseline makes {native}x{native} images, "
            f"but the evaluation size is {size}x{size}"
        )
    generator, info = load_generator(run, role="single")
    images = []
    for start in range(0, count, 64):
        z = latents(seed, range(start, min(start + 64, count)), info.model_config.nz)
        images.append(tanh_to_uint8(generator(torch.from_numpy(z))))
    return torch.cat(images).permute(0, 3, 1, 2).contiguous()


def split_held_out(
    data: PairedData, validation_fraction: float, seed: int
) -> tuple[PairedData, PairedData]:
    """(validation, test) by a seeded permutation; both non-empty."""
    if len(data) < 2:
        raise DataError(f"the held-out real set has {len(data)} image(s); need at least 2")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = min(max(1, round(validation_fraction * len(data))), len(data) - 1)
    return subset(data, sorted(order[:n_val])), subset(data, sorted(order[n_val:]))


def _held_out_root(real: Path, real_test: Path | None) -> tuple[Path, str]:
    """Where the held-out real pairs are: --real-test, or the real root's test/ split."""
    if real_test is not None:
        return real_test, "training"
    if (Path(real) / "test").is_dir():
        return real, "test"
    raise UserInputError(
        f"--real-test is needed: {real} has no test/ split, and the segmenter must be tested "
        "on real images that neither the generator nor the segmenter was trained on"
    )


def _synthetic_size(
    size: int | None,
    synthetic: Path | None,
    stage1: Path,
    conditional: ConditionalSampler | None,
) -> int:
    """The evaluation size: the one the synthetic data were (or will be) generated at."""
    if synthetic is not None:
        return _checked_size(size, synthetic_folder_size(synthetic), f"the images in {synthetic}")
    if conditional is not None:
        return _checked_size(size, conditional.info.image_size, str(conditional.run))
    return _checked_size(size, read_generator_info(stage1, "stage1").image_size, str(stage1))


def _dual_gan_sources(
    stage1: Path, stage2: Path, count: int, seed: int, real_masks: int
) -> tuple[str, str]:
    """How the report names the dual GAN's samples and the oracle set."""
    if stage1 == DEMO_STAGE1 and stage2 == DEMO_STAGE2:
        models, stage2_name = "the bundled demo models", "the bundled demo stage II"
    else:
        models, stage2_name = f"stage I {stage1}, stage II {stage2}", f"stage II {stage2}"
    return (
        f"{models}, {count} samples, seed {seed}",
        f"{stage2_name} on the {real_masks} real training masks",
    )


def load_evaluation_data(
    *,
    real: Path,
    real_test: Path | None,
    synthetic: Path | None,
    stage1: Path | None,
    stage2: Path | None,
    count: int,
    single: Path | None,
    size: int | None,
    validation_fraction: float,
    seed: int,
    cstylegan2: Path | None = None,
    label: str | int | None = None,
    truncation: float | None = None,
    oracle: bool = True,
    progress: bool = True,
) -> EvaluationData:
    """Load and check every input; the first problem found is a one-line error.

    The synthetic set is `synthetic` (a folder), else one class of `cstylegan2`, else the
    dual GAN `stage1` + `stage2` (the bundled demo models when not given). The oracle set
    (stage II on the real training masks) is made for a dual GAN unless `oracle` is False.
    """
    if count < 1:
        raise UserInputError(f"--count must be >= 1, got {count}")
    if not 0 < validation_fraction < 1:
        raise UserInputError(f"--validation-fraction must be in (0, 1), got {validation_fraction}")
    stage1, stage2 = Path(stage1 or DEMO_STAGE1), Path(stage2 or DEMO_STAGE2)
    sampler = ConditionalSampler(cstylegan2) if cstylegan2 is not None else None
    chosen = conditional_class(sampler, label, truncation) if sampler is not None else None
    size = _synthetic_size(size, synthetic, stage1, sampler)
    held_out_root, held_out_split = _held_out_root(real, real_test)
    real_train = load_paired_data(real, size, progress=progress)
    held_out = load_paired_data(held_out_root, size, split=held_out_split, progress=progress)
    validation, test = split_held_out(held_out, validation_fraction, seed)
    oracle_data = None
    if synthetic is not None:
        synthetic_data = load_paired_data(synthetic, size, progress=progress)
        source = str(synthetic)
        oracle_note = "the synthetic set is a folder, so no stage II model is known"
    elif sampler is not None and chosen is not None:
        synthetic_data = sample_conditional(sampler, chosen, count, seed, progress=progress)
        source = (
            f"class {chosen.index} ({chosen.name}) of the conditional StyleGAN2 {chosen.run}, "
            f"truncation {chosen.truncation:g}, {count} samples, seed {seed}"
        )
        oracle_note = "a conditional StyleGAN2 draws image and mask together: it has no stage II"
    else:
        pipeline = TwoStagePipeline(stage1, stage2)
        synthetic_data = sample_two_stage(pipeline, count, seed, progress=progress)
        source, oracle_note = _dual_gan_sources(stage1, stage2, count, seed, len(real_train))
        if oracle:
            oracle_data = stage2_on_masks(pipeline.stage2, real_train, seed, progress=progress)
    if not oracle:
        oracle_note = "left out (--no-oracle)"
    data = EvaluationData(
        size,
        real_train,
        validation,
        test,
        synthetic_data,
        source,
        conditional=chosen,
        oracle=oracle_data,
        oracle_note=oracle_note,
        from_folder=synthetic is not None,
    )
    if single is not None:
        data.single = sample_single(single, len(synthetic_data), seed, size)
        data.single_source = f"{single}, {len(synthetic_data)} samples, seed {seed}"
    return data
