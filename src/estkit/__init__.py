"""estkit: EST (RFC 7030 / 8951) client, server + CA, NMOS BCP-003-03 node, conformance suite."""

__version__ = "0.1.0"
