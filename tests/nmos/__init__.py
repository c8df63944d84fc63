"""Tests of estkit.nmos (BCP-003-03 node side)."""
