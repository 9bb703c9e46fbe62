"""Jobs: the steps a user runs (sample, run, reduce, analyze, submit, calibrate, development, info), composed from the layers below."""
