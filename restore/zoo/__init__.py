"""The shipped model zoo: weights, genotypes and model cards inside the package."""
