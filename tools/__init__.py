"""Command lines of cotap_mm (docs/training.md, docs/probes.md, ...); not part of the package."""
