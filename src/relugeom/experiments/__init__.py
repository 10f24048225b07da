"""The papers' experiments: models, data, training, critical-layer re-initialisation."""
