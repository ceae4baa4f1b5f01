"""Small real models with numpy forward passes that take any turbokv-style cache."""
