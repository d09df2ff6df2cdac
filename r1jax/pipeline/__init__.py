"""The R1 recipes built from the parts: evaluation, rejection sampling, stage chaining, demo."""
