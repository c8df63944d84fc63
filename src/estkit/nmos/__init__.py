"""estkit.nmos"""
