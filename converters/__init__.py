"""The EdgeFleet converter: trained models → verified, signed ONNX artifacts.

``converters.api.convert`` is the entry point; ``converters.cli`` registers
``edgefleet convert``. This package and its ``cli`` module import the standard library only at
module level; numpy, onnx, onnxruntime, skl2onnx and scikit-learn are imported when used.
"""
