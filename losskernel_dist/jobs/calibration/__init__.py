"""``losskernel calibrate``: short pilot runs over a grid of SGLD settings, and a recommendation.

Each setting (lr, localization, nbeta) of the grid is a real, small run of the
sampler (``jobs.sample.sample``) in ``OUTPUT/calibration/<setting>/``: the
same store, checkpoints, resume and fingerprint checks as any run, so a pilot
started with one model and reused with another is refused, and an interrupted
calibration resumes where it stopped.

The job is split by what each step does:

* ``grid.py``: the settings to try, the pilot budget and each pilot's config,
  and how the pilot chains are dealt over processes;
* ``pilots.py``: creating the pilot runs (with the losses at w*) and sampling
  this process's pilot chains;
* ``evaluate.py``: what the pilots' stored data show per setting (divergence,
  drift, distance, split-half CKA and its projection) and ``RULE``, which
  judges the settings and picks the recommendation;
* ``calibrate.py``: the job itself (shards, ranks, barriers), its report and
  ``calibration.json``, and the recommended config that ``--write`` writes.
"""
