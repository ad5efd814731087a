"""tl: which backbone and which transfer strategy work best on my images?"""

__version__ = "0.1.0"
