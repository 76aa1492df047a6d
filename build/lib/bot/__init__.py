"""Stancebot: a Discord bot that posts news questions and tallies the stances members take."""

__version__ = "0.1.0"
