"""Fast kernels: Numba-compiled, same names and signatures as npusim_kernels.golden.

Never imports the golden kernels (a shared bug would hide).
"""
