"""The base layer: validated frozen configs (:mod:`promogym.core.config`) and atomic, provenance-stamped
file output (:mod:`promogym.core.io`). It imports nothing else of promogym."""
