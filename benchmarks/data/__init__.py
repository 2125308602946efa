"""Data, the ground layer: decoding (PyAV, only the frames asked for), candidate positions,
annotation lists and dataset adapters (the embedded synth-events generator), manifests."""
