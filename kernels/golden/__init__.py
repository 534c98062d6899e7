"""Golden reference kernels: plain NumPy, int64 arithmetic, written to be obviously right.

Never imports Numba, never imports the fast kernels.
"""
