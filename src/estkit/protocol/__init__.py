"""estkit.protocol"""
