"""Do generated samples look like their class? A nearest-centroid test on simple statistics.

A conditional generator that ignores its label draws the same mixture for every class. The
check: describe each sample by a few statistics of its luma and mask (brightness, contrast,
mask fraction, how much darker or brighter the masked structure is than its surroundings,
how thick the structure is), fit one centroid per class on the *real* training data, and
count how many generated samples land nearest to the centroid of the class they were asked
for. Chance is 1 / classes. Colour is left out on purpose: grayscale classes are made gray
by the generator's last step whatever it learned, so colour would flatter a generator that
ignores its label.
"""

from __future__ import annotations

import torch

from synthmed.training.data.classes import ClassData

FRACTION = 2  # index of the mask fraction among the features


def sample_features(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] and masks [N, 1, H, W] in {0, 1} -> features [N, 5]."""
    images, masks = images.float(), masks.float()
    grey = images.mean(dim=1, keepdim=True)
    area = masks.sum(dim=(1, 2, 3)).clamp(min=1)
    outside = (1 - masks).sum(dim=(1, 2, 3)).clamp(min=1)
    inside_mean = (grey * masks).sum(dim=(1, 2, 3)) / area
    outside_mean = (grey * (1 - masks)).sum(dim=(1, 2, 3)) / outside
    # Interior: mask pixels whose 3x3 neighbourhood is all mask; thin vessels have few.
    interior = -torch.nn.functional.max_pool2d(-masks, 3, stride=1, padding=1)
    return torch.stack(
        [
            grey.mean(dim=(1, 2, 3)),
            grey.std(dim=(1, 2, 3)),
            masks.mean(dim=(1, 2, 3)),
            inside_mean - outside_mean,
            interior.sum(dim=(1, 2, 3)) / area,
        ],
        dim=1,
    )


def class_separability(
    data: ClassData, generated: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Accuracy of a nearest-centroid classifier fitted on real data, applied to generated
    samples [N, 3 + 1, H, W] (image about [-1, 1], mask channel > 0), and per-class means.

    Keys: `class_accuracy` (fraction classified as their label), and for each class name
    `fraction_<name>` (generated mask fraction) and `real_fraction_<name>`.
    """
    real = sample_features(data.images.float() / 255, data.masks)
    mean, std = real.mean(dim=0), real.std(dim=0).clamp(min=1e-6)
    centroids = torch.stack(
        [((real[data.labels == k] - mean) / std).mean(dim=0) for k in range(len(data.classes))]
    )
    generated = generated.detach().float().cpu()
    fake = sample_features((generated[:, :3].clamp(-1, 1) + 1) / 2, (generated[:, 3:] > 0).float())
    predicted = torch.cdist((fake - mean) / std, centroids).argmin(dim=1)
    labels = labels.cpu()
    metrics = {"class_accuracy": float((predicted == labels).float().mean())}
    for k, info in enumerate(data.classes):
        metrics[f"fraction_{info.name}"] = float(fake[labels == k, FRACTION].mean())
        metrics[f"real_fraction_{info.name}"] = float(real[data.labels == k, FRACTION].mean())
    return metrics
