"""`python -m tl.bench`: tl against the PyTorch tutorial's loop and the compute ceiling."""
