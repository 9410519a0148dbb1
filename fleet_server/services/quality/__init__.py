"""Quality per model version from labelled samples: accuracy, per-class scores, mAP@0.5."""
