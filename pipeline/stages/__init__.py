"""One module per stage. Each exposes `fingerprint(...)` (what its cache key depends on),
`check(...)` (feasibility problems found before any heavy work) and `run(..., out, ctx)`."""
