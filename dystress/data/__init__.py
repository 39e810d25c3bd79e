"""Datasets as uint8 tensors (CIFAR, cached image folders), GPU-side augmentation, and batching from
device-resident or host-resident (memory-mapped) sets."""
