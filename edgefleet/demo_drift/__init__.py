"""The drift scenario's pieces: how the demo's cameras drift (:mod:`.drift`) and the demo's
training command (:mod:`.trainer`), shipped so that tests and the demo use the same ones; the
scenario itself (:mod:`.scenario`) with its material (:mod:`.digits`), its stand-in labeller
(:mod:`.labeller`), its negative cases (:mod:`.negative`) and its :mod:`.timeline`."""
