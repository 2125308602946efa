"""Cost: FLOP counting (fvcore with handlers, ptflops cross-check), the papers' configurations,
throughput timing, and the throughput regression gate."""
