"""Weight statistics of trained networks: projection statistics and n_l (seed 001), cones (seeds 000, 002)."""
