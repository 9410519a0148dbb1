"""Run by the litert-torch tool venv's Python in isolated mode (``python -I``: this folder's
``select.py`` must not shadow the standard library's) by ``converters.tflite.from_torch``, never
imported by EdgeFleet: it sees only torch and litert_torch. Argument: one JSON object
``{"source", "out", "shapes": [[...], ...], "trust_pickle"}``. Exit 2 with one line on stderr
for a model it cannot load, 1 when litert-torch fails."""

import json
import sys
from pathlib import Path


def main() -> int:
    job = json.loads(sys.argv[1])
    source = Path(job["source"])
    import torch

    try:
        if source.suffix == ".pt2":
            module = torch.export.load(str(source)).module()
        elif job["trust_pickle"]:
            module = torch.load(str(source), map_location="cpu", weights_only=False)  # noqa: S614
        else:
            sys.stderr.write(
                f"{source.name}: litert-torch converts an nn.Module through torch.export; a "
                "TorchScript archive cannot: save with torch.export.save (.pt2), pass "
                "--trust-pickle for a pickled module, or use --format onnx\n"
            )
            return 2
    except Exception as err:  # noqa: BLE001 (the loader raises what the file makes it)
        sys.stderr.write(f"{source.name}: cannot load: {str(err).splitlines()[0][:300]}\n")
        return 2
    if not isinstance(module, torch.nn.Module):
        sys.stderr.write(f"{source.name} holds a {type(module).__name__}, not an nn.Module\n")
        return 2
    if source.suffix != ".pt2":  # an exported program is already in inference form
        module.eval()
    import litert_torch

    examples = tuple(torch.zeros(shape, dtype=torch.float32) for shape in job["shapes"])
    try:
        litert_torch.convert(module, examples).export(job["out"])
    except Exception as err:  # noqa: BLE001 (litert-torch raises many types)
        lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        sys.stderr.write(f"litert-torch failed: {lines[0][:300]}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
