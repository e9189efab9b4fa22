"""Audit: judge finished Samples from their audio (measures, bands, gates, report); see ARCHITECTURE.md."""
