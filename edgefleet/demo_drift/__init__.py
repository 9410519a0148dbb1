"""The drift scenario's pieces: how the demo's cameras drift (:mod:`.drift`) and the demo's
training command (:mod:`.trainer`), shipped so that tests and the demo use the same ones."""
