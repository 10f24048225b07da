"""Weight statistics of trained networks: projection statistics and n_l (Gamba et al. 2020), cones (Gamba et al.
2019; Carlsson 2019)."""
