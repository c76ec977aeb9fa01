"""Random draws: per-sample seeds and the noise samplers (i.i.d., antithetic, QMC, LHS)."""
