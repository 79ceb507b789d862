"""promogym environments and the ground-truth market they simulate."""
