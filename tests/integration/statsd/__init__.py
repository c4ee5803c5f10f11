"""Etsy's StatsD daemon for the integration tests: installing it, running it, and the names it
files the services' metrics under."""
