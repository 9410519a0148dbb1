"""The demo labeller, standing in for a person: it answers the drift alert by labelling the
fleet's new samples from the dataset's true labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefleet.demo import MODEL_NAME


def label_new(client: Any, work: Path, sources: dict[str, Any], done: set[int]) -> int:
    """The demo labeller: each new sample gets the true label of the source frame it is (the
    nearest by pixels: a JPEG of an 8×8 frame is close, not exact). A person would do this."""
    import cv2
    import numpy as np

    page = client.list_samples(model=MODEL_NAME, labelled=False, limit=500)
    labels = []
    names = list(sources)
    stack = np.stack([sources[n][0] for n in names]).astype(np.int32)
    for sample in page["items"]:
        if sample["id"] in done:
            continue
        dest = work / f"sample-{sample['id']}.jpg"
        client.sample_content(sample["id"], dest)
        image = cv2.imread(str(dest), cv2.IMREAD_GRAYSCALE)
        done.add(sample["id"])
        if image is None or image.shape != (8, 8):
            continue
        errors = np.abs(stack - image.astype(np.int32)).mean(axis=(1, 2))
        if errors.min() < 20:
            labels.append(
                {"id": sample["id"], "label": str(sources[names[int(errors.argmin())]][1])}
            )
    if labels:
        client.label_samples(labels)
    return len(labels)
