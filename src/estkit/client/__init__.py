"""estkit.client"""
