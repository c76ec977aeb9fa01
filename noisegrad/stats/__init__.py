"""Statistics of noisy samples."""
