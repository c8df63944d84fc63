"""estkit.server"""
