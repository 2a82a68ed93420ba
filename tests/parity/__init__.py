"""PyTorch parity: the project's own PyTorch reference of CBAM and its stored fixtures."""
