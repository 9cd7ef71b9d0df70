"""Few-step students of a frozen teacher: progressive distillation and consistency distillation/training."""
