"""Running a plan: the runner, its stage workers (zygote, worker), the run cache, manifest and the sweep of superseded
outputs."""
