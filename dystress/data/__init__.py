"""Datasets as uint8 tensors, GPU-side augmentation and device-resident batching."""
