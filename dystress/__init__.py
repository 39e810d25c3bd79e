"""dystress: dynamically scaled temperature (DySTreSS) in contrastive self-supervised learning.

A reproducible study of Manna et al., "Dynamically Scaled Temperature in Self-Supervised Contrastive
Learning", arXiv 2308.01140: exact temperature-scaled contrastive losses, a GPU-first pretraining
engine, feature-space metrics and the papermill-driven ablations behind the book.
"""

__version__ = "0.1.0"
