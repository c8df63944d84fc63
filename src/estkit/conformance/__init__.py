"""estkit.conformance"""
