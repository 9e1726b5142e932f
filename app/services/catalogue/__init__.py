"""Purposes, recipients, policies, categories: the controller's catalogues."""
