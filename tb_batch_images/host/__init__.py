"""The writer side on the host: what happens to a captured batch after the step.

Plain numpy, on the background writer thread: `pixels` (values to uint8, PNG/JPEG),
`masks` (dense outputs), `predictions` (labels and outputs read as classes or values),
`record` (the on-disk record of a batch), `data_map` (the per-sample statistics'
columns), and `writer` (the bounded queue and the thread that writes event files).
"""
