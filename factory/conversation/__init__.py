"""Turn-taking measures and reference bands: pure functions over per-channel activity and pure
data. The timing model (`factory.timeline`), the config (gate names) and the audit share them, so
this package imports no stage."""
