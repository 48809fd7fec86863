"""`mcrave-bridge`: stream audio to the encoder service and deliver to Max/MSP over OSC.

Latents go out one OSC message per frame on a steady clock (so `udpreceive -> mcs.sig~ ->
nn~ model.ts decode` plays them); decoded audio from the decoder service can go to a device or a
file. Control comes in over OSC (see `control.py` for the address space).
"""
