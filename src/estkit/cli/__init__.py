"""estkit.cli"""
