"""Developer tools that ship with the package: random-weight shape twins of real architectures."""
