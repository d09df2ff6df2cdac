"""The R1 recipes built from the parts (evaluation and rejection sampling live in
``r1jax.evaluation``): stage chaining, reports, demo."""
