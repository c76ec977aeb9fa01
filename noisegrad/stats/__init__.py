"""Statistics of noisy samples: moments, grouped standard errors, smoothing, deltas and stopping."""
