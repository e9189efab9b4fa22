"""Run stage: shards, resume, atomic I/O, the run format (`rows`, `records`) and its one reader
(`read`: a finished run, local or at an fsspec URL, back as Samples). Nothing is imported here:
`read` pulls in datasets and scipy, which the light records (`records`, `store`) and so
`duplex-factory --help` must not pay for."""
