"""wxbench spherical: Spherical Fourier Neural Operators (``sfno`` direct, ``sfno_ar`` autoregressive)
built on torch-harmonics, with spherical harmonic transforms on the data's own latitude grid."""
