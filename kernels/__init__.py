"""npusim_kernels: integer NPU kernels, golden (plain NumPy) and fast (Numba).

This package is a leaf: it imports NumPy and Numba only, never npusim.
`npusim_kernels.golden` and `npusim_kernels.fast` expose the same functions
under the same names and signatures; tests compare them element for element.
"""
