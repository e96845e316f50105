"""Search spaces, the op registry, genotypes and derived networks."""
