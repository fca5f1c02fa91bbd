"""synthmed's public serving contract, written once: model names, tensors, config keys, provenance.

Everything that crosses a process boundary between export, the model repository, Triton, the
in-process runtimes and the clients is named here, and every one of them imports it; the
python backend's `model.py`, which runs inside Triton where synthmed may not be installed,
keeps copies that a test holds equal to these. Plain Python only (no numpy, no torch, no onnx),
so the lightest install reads it.

    synthmed_stage1      z FP32 [B, nz]                            -> mask UINT8 [B, H, W]
    synthmed_stage2      mask UINT8 [B, H, W], z                   -> image UINT8 [B, H, W, 3]
    synthmed_fused       z                                         -> image, mask (one graph)
    synthmed             z  (ensemble: stage I then stage II)      -> image, mask
    synthmed_single      z                                         -> image (baseline)
    synthmed_cstylegan2  z, class INT64 [B], truncation FP32 [B]   -> image, mask

A per-sample scalar (class, truncation) is [B] in the graph and [B, 1] on the wire: Triton
needs at least one dimension after the batch axis. Stage II takes the sample's z too: its
texture noise is spread from it inside the graph (a stage II trained without noise ignores
it), so a render is a pure function of (mask, seed, index) like everything else.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from synthmed.errors import InvalidRequestError

# --- model names (part of the public interface) ---------------------------------------------
ENSEMBLE = "synthmed"
STAGE1 = "synthmed_stage1"
STAGE2 = "synthmed_stage2"
FUSED = "synthmed_fused"
SINGLE = "synthmed_single"
CONDITIONAL = "synthmed_cstylegan2"

# The export's own record: files, hashes, tensors, provenance, verification.
EXPORT_MANIFEST = "export_manifest.json"

# --- model config parameters (string values in config.pbtxt) --------------------------------
PARAM_PROVENANCE = "synthmed_provenance"  # JSON list of Provenance records
PARAM_CLASSES = "synthmed_classes"  # JSON list: label k is classes[k]
PARAM_GRAYSCALE_CLASSES = "synthmed_grayscale_classes"  # JSON list of class names
PARAM_DEFAULT_TRUNCATION = "default_truncation"  # value for an omitted truncation input
# Python backend only: which file its onnxruntime session opens, and how it uses the CPU.
PARAM_ONNX_FILE = "onnx_file"
PARAM_INTRA_OP_THREADS = "intra_op_threads"
PARAM_ALLOW_SPINNING = "allow_spinning"

# psi = 1 leaves the style vector as drawn: no truncation.
DEFAULT_TRUNCATION = 1.0


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract: its name, Triton datatype and dims after the batch axis
    (symbols such as "nz", "H", "W" are fixed per model; () is one scalar per sample)."""

    name: str
    datatype: str
    dims: tuple[int | str, ...]

    @property
    def numpy_dtype(self) -> str:
        """The numpy dtype name of this tensor (what the export manifest records)."""
        return NUMPY_DTYPES[self.datatype]


NUMPY_DTYPES = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8", "INT64": "int64"}

Z = TensorSpec("z", "FP32", ("nz",))
MASK = TensorSpec("mask", "UINT8", ("H", "W"))
IMAGE = TensorSpec("image", "UINT8", ("H", "W", 3))
CLASS = TensorSpec("class", "INT64", ())
TRUNCATION = TensorSpec("truncation", "FP32", ())


@dataclass(frozen=True)
class ModelSpec:
    """A model's inputs and outputs in order, and the inputs a request may leave out: for each,
    the config parameter that holds the value filled in, and that value's default."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    optional: Mapping[str, tuple[str, float]] | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input names in graph order."""
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names in graph order."""
        return tuple(t.name for t in self.outputs)


MODELS: dict[str, ModelSpec] = {
    STAGE1: ModelSpec(STAGE1, (Z,), (MASK,)),
    STAGE2: ModelSpec(STAGE2, (MASK, Z), (IMAGE,)),
    FUSED: ModelSpec(FUSED, (Z,), (IMAGE, MASK)),
    ENSEMBLE: ModelSpec(ENSEMBLE, (Z,), (IMAGE, MASK)),
    SINGLE: ModelSpec(SINGLE, (Z,), (IMAGE,)),
    CONDITIONAL: ModelSpec(
        CONDITIONAL,
        (Z, CLASS, TRUNCATION),
        (IMAGE, MASK),
        optional={TRUNCATION.name: (PARAM_DEFAULT_TRUNCATION, DEFAULT_TRUNCATION)},
    ),
}


# --- provenance ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """Which training run a served model's weights come from: one record per source run.

    Export writes these into the export manifest, the repository writer copies them into the
    `synthmed_provenance` parameter, clients and the in-process runtime read them back and the
    dataset manifest stores them as `sources`: one shape everywhere.
    """

    role: str | None
    step: int | None = None
    weights_sha256: str | None = None
    data_fingerprint: str | None = None
    data: str | list[str] | None = None

    def data_folders(self) -> list[str]:
        """The training data folders (a conditional model learns from one per class)."""
        if not self.data:
            return []
        return [str(d) for d in (self.data if isinstance(self.data, list) else [self.data])]


def provenance_json(records: Sequence[Provenance]) -> str:
    """The parameter value / manifest form: a JSON list with sorted keys."""
    return json.dumps([asdict(r) for r in records], sort_keys=True)


def parse_provenance(value: str | list | None) -> list[Provenance]:
    """Records from a parameter value or a manifest entry (none for a model exported before
    provenance was recorded)."""
    records = json.loads(value) if isinstance(value, str) and value else value
    fields = Provenance.__dataclass_fields__
    return [Provenance(**{k: v for k, v in r.items() if k in fields}) for r in records or []]


# --- what a generator serves -----------------------------------------------------------------
@dataclass(frozen=True)
class Contract:
    """What one served (or in-process) generator takes and returns: latent size, image size, and
    for a class-conditional model its class names (label k = classes[k]) and default psi."""

    model: str
    version: str
    nz: int
    height: int
    width: int
    conditional: bool = False
    classes: tuple[str, ...] = ()
    default_truncation: float | None = None

    def describe_classes(self) -> str:
        """'0=retina, 1=cells': the labels a user may give, for messages and help."""
        return ", ".join(f"{k}={name}" for k, name in enumerate(self.classes))

    def request(
        self, label: int | str | None = None, truncation: float | None = None
    ) -> tuple[int | None, float | None]:
        """The one rule for (label, psi): a conditional model needs a label (a class name or
        index, also as a digit string from a command line) and takes psi (None: its default);
        a model without classes takes neither. Raises InvalidRequestError naming the problem."""
        if not self.conditional:
            given = [n for n, v in (("label", label), ("truncation", truncation)) if v is not None]
            if given:
                raise InvalidRequestError(
                    f"model {self.model!r} is not class-conditional and takes no "
                    f"{' or '.join(given)}; use a conditional model such as {CONDITIONAL}"
                )
            return None, None
        psi = self.default_truncation if truncation is None else _check_truncation(truncation)
        return self._resolve_label(label), psi

    def _resolve_label(self, label: int | str | None) -> int:
        classes = list(self.classes)
        if label is None:
            raise InvalidRequestError(
                f"model {self.model!r} is class-conditional: give a label, one of "
                f"{self.describe_classes()}"
            )
        if isinstance(label, str) and label.strip() in classes:
            return classes.index(label.strip())
        if isinstance(label, str) and label.strip().lstrip("-").isdigit():
            label = int(label.strip())
        if isinstance(label, bool) or not isinstance(label, numbers.Integral):
            raise InvalidRequestError(
                f"unknown class {label!r} for model {self.model!r}: expected a name or index, "
                f"one of {self.describe_classes()}"
            )
        if not 0 <= int(label) < len(classes):
            raise InvalidRequestError(
                f"label {int(label)} is out of range for model {self.model!r}: expected 0.."
                f"{len(classes) - 1} ({self.describe_classes()})"
            )
        return int(label)


def _check_truncation(truncation: object) -> float:
    if isinstance(truncation, bool) or not isinstance(truncation, numbers.Real):
        raise InvalidRequestError(f"truncation must be a number (psi), got {truncation!r}")
    if not math.isfinite(truncation):
        raise InvalidRequestError(f"truncation must be a finite number (psi), got {truncation}")
    return float(truncation)
