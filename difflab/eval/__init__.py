"""Sample-quality evaluation: a Fashion-MNIST feature net and the distances measured in its space (FD, KID,
precision/recall, class coverage), distances between 2-D point sets, and plots. See README.md here."""
