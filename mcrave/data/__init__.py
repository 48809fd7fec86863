"""Training data: synthetic corpus (synth/), dataset preparation and the crop reader."""
