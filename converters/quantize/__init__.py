"""Quantization: typed configs, engines, candidates, the accuracy budget and the latency gate."""
