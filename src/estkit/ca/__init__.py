"""estkit.ca"""
