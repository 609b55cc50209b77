"""The instrument as a whole: planning and opening it, readout windows, making it safe."""
