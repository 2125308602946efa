"""The methods: one module per paper or baseline family; each registers its samplers."""
